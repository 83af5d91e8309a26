"""Real-process tests of `rundaemon --all`: one supervisor forking every daemon, restarting and stopping them."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client, override_settings

from daemons import registry
from daemons.process import children, pidfile, supervisor
from daemons.process.exits import State
from tests.conftest import Project, wait_for

pytestmark = pytest.mark.process

SETTINGS = "tests.supervisorapp.settings"


def alive(pid: int) -> bool:
    """True for a live process; a zombie counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def signal_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} for {pid}")


class Supervised:
    """A Project whose processes also know the fragile test daemon, and that kills whatever it saw in teardown."""

    def __init__(self, project: Project) -> None:
        self.project = project
        project.env["DJANGO_SETTINGS_MODULE"] = SETTINGS
        project.env["DAEMONS_STOP_TIMEOUT"] = "3"
        self.seen: set[int] = set()

    def holder(self, label: str) -> int | None:
        pid = pidfile.read_holder(self.project.run_dir / f"{label}.pid")
        if pid is not None:
            self.seen.add(pid)
        return pid

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = self.project.manage("rundaemon", *args, "--detach", env=env, timeout=90)
        self.holder(supervisor.NAME)
        return result

    def cleanup(self) -> None:
        self.project.manage("stopdaemon", "--all", "--kill", timeout=60)
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def supervised(project: Project) -> Iterator[Supervised]:
    sup = Supervised(project)
    try:
        yield sup
    finally:
        sup.cleanup()


def test_all_starts_every_registered_daemon_under_one_parent(supervised: Supervised) -> None:
    started = supervised.start("--all")
    assert started.returncode == 0, started.stderr
    parent = supervised.holder(supervisor.NAME)
    assert parent is not None and f"(pid {parent})" in started.stdout
    names = registry.names() + ["fragile"]
    pids = {name: supervised.holder(name) for name in names}
    # "crashing" dies on its second tick by design: it may be between a death and its restart.
    steady = {name: pid for name, pid in pids.items() if name != "crashing"}
    assert all(steady.values()), pids
    assert len(set(steady.values())) == len(steady)
    for name, pid in steady.items():
        assert pid is not None and parent_of(pid) == parent, name
        assert (supervised.project.run_dir / f"{name}.pid").read_text() == f"{pid}\n"

    status = supervised.project.manage("daemonstatus", "counter")
    assert status.returncode == 0 and str(steady["counter"]) in status.stdout

    stopped = supervised.project.manage("stopdaemon", "--all", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in steady.values() if pid) and not alive(parent)
    assert list(supervised.project.run_dir.glob("*.pid")) == []


def test_a_killed_child_is_restarted_and_the_others_are_untouched(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    counter, idle = supervised.holder("counter"), supervised.holder("idle")
    assert counter and idle
    os.kill(counter, signal.SIGKILL)
    new = wait_for(lambda: (pid := supervised.holder("counter")) not in (None, counter) and pid, timeout=30,
                   message="a restarted counter")
    assert alive(new) and not alive(counter)
    assert parent_of(new) == supervised.holder(supervisor.NAME)
    assert supervised.holder("idle") == idle and alive(idle)
    log = (supervised.project.log_dir / "supervisor.log").read_text()
    assert "counter exited (killed by SIGKILL); restarting in" in log


def test_stopdaemon_name_stops_one_child_until_rundaemon_or_restartdaemon_asks(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    parent, counter, idle = (supervised.holder(n) for n in (supervisor.NAME, "counter", "idle"))
    stopped = supervised.project.manage("stopdaemon", "idle")
    assert stopped.returncode == 0 and f"idle stopped (pid {idle})" in stopped.stdout
    log = supervised.project.log_dir / "supervisor.log"
    assert "idle stopped (exit status 0)" in log.read_text()
    assert not supervised.project.pid_file("idle").exists()
    assert parent is not None and alive(parent) and supervised.holder("counter") == counter
    status = supervised.project.manage("daemonstatus", "idle")
    assert status.returncode == 3 and "stopped (supervised)" in status.stdout, status.stdout
    # Not restarted on its own...
    assert "idle forked" not in log.read_text().split("asked to stop idle")[1]

    # ...until asked: then again as the supervisor's child.
    again = supervised.project.manage("rundaemon", "idle", "--detach")
    assert again.returncode == 0 and "started by the supervisor" in again.stdout, again.stdout + again.stderr
    new = supervised.holder("idle")
    assert new not in (None, idle) and parent_of(new) == parent


def test_a_child_failing_its_first_start_fails_the_command_and_is_retried_with_backoff(
        supervised: Supervised) -> None:
    started = supervised.start("counter", "fragile", env={"SUPERVISORAPP_FAIL_SETUP": "1"})
    assert started.returncode == 1
    assert started.stderr.count("\n") == 1 and "Traceback" not in started.stderr
    assert "fragile: " in started.stderr and "failed to set up on purpose" in started.stderr
    parent = supervised.holder(supervisor.NAME)
    counter = supervised.holder("counter")
    assert parent and alive(parent) and counter and alive(counter)
    assert supervised.holder("fragile") is None
    log = supervised.project.log_dir / "supervisor.log"
    # Never given up on: it is tried again and again, each time said in the log.
    wait_for(lambda: log.read_text().count("fragile forked") >= 3, timeout=30, message="fragile retried")
    assert "fragile exited (setup failed: RuntimeError" in log.read_text()
    status = supervised.project.manage("daemonstatus", "fragile", "--json")
    row = json.loads(status.stdout)[0]
    assert row["state"] == "restarting" and row["supervised"] in ("restarting", "starting"), row
    assert "failed to set up on purpose" in row["restart_reason"]
    assert status.returncode == 3


def test_sighup_reaches_the_children_and_they_reopen_their_logs(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    logs = [supervised.project.log_file(name) for name in ("counter", "idle")]
    for log in logs:
        wait_for(log.exists, message=f"{log.name}")
        log.rename(log.with_suffix(".log.1"))
    parent = supervised.holder(supervisor.NAME)
    assert parent is not None
    os.kill(parent, signal.SIGHUP)
    for log in logs:
        wait_for(lambda log=log: log.exists() and "reopened log files on SIGHUP" in log.read_text(), timeout=30,
                 message=f"a reopened {log.name}")


def test_orphans_stop_and_a_killed_supervisor_leaves_an_ordinary_stale_pid_file(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    parent = supervised.holder(supervisor.NAME)
    counter, idle = supervised.holder("counter"), supervised.holder("idle")
    assert parent is not None and counter is not None and idle is not None
    children = [counter, idle]
    os.kill(parent, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=30, message="the orphans to stop")
    assert not (supervised.project.pid_file("counter")).exists()
    own = supervised.project.run_dir / f"{supervisor.NAME}.pid"
    assert pidfile.inspect(own) == pidfile.PidState(State.STALE, parent)

    stop = supervised.project.manage("stopdaemon", "--all")
    assert stop.returncode == 0 and f"stale PID file names pid {parent}; not signalled" in stop.stdout
    again = supervised.start("counter", "idle")
    assert again.returncode == 0, again.stderr
    new_parent = supervised.holder(supervisor.NAME)
    assert new_parent not in (None, parent)


def test_children_get_sane_signal_handlers_even_if_sigint_was_ignored(supervised: Supervised) -> None:
    def ignore_interrupts() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    with (supervised.project.tmp / "stderr").open("w") as stderr:
        proc = supervised.project.popen("rundaemon", "counter", "idle", preexec_fn=ignore_interrupts,
                                        stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        counter = wait_for(lambda: supervised.holder("counter"), timeout=60, message="the counter child")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            bit = 1 << (sig - 1)
            wait_for(lambda bit=bit: signal_mask(counter, "SigCgt") & bit, timeout=30, message=f"{sig.name} caught")
            assert not signal_mask(counter, "SigIgn") & bit
        os.kill(counter, signal.SIGINT)
        wait_for(lambda: not alive(counter), timeout=30, message="the child to stop on SIGINT")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_under_systemd_only_the_supervisor_says_ready_and_ctrl_c_stops_cleanly(
    supervised: Supervised, tmp_path: Path
) -> None:
    address = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(60)
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        proc = supervised.project.popen("rundaemon", "counter", "idle", env={"NOTIFY_SOCKET": str(address)},
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        messages = [listener.recv(4096).decode()]
        while "READY=1" not in messages[-1]:
            messages.append(listener.recv(4096).decode())
        parent = supervised.holder(supervisor.NAME)
        assert f"MAINPID={parent}" in messages[-1]
        children = [supervised.holder("counter"), supervised.holder("idle")]
        assert all(children)
        # Both children are past their own readiness point: anything they sent has arrived.
        listener.settimeout(0.5)
        try:
            while True:
                messages.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
        assert sum("READY=1" in m for m in messages) == 1, messages
    finally:
        # Ctrl-C hits the whole foreground process group; the children must still stop cleanly, once.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        listener.close()
    assert proc.returncode == 0, stderr.read_text()
    assert not any(alive(pid) for pid in children if pid)
    log = stderr.read_text()
    assert "counter stopped (exit status 0)" in log and "idle stopped (exit status 0)" in log, log


def test_bad_combinations_are_one_line_errors(supervised: Supervised) -> None:
    for args in (["--all", "counter"], ["counter", "idle", "--once"], ["counter", "nosuch"], []):
        result = supervised.project.manage("rundaemon", *args)
        assert result.returncode != 0 and result.stderr.count("\n") == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr


def heartbeat_stopped(name: str) -> bool:
    from daemons.models import Heartbeat

    beat = Heartbeat.objects.filter(name=name).first()
    return beat is not None and beat.stopped_at is not None


def test_stopdaemon_all_lets_each_child_finish_its_tick_and_stop_cleanly(supervised: Supervised,
                                                                        tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    env = {"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "2"}
    assert supervised.start("slow", "idle", env=env).returncode == 0
    slow = supervised.holder("slow")
    wait_for(lambda: marker.exists() and marker.read_text() == "in tick\n", message="a tick in flight")
    stopped = supervised.project.manage("stopdaemon", "--all", timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "slow stopped (by the supervisor)" in stopped.stdout and "idle stopped (by the supervisor)" in stopped.stdout
    assert f"{supervisor.NAME} stopped" in stopped.stdout
    # One SIGTERM only: the tick in flight ran to its end, and the child said it stopped.
    assert marker.read_text() == "tick done\n"
    log = (supervised.project.log_dir / "supervisor.log").read_text()
    assert "slow stopped (exit status 0)" in log and "idle stopped (exit status 0)" in log, log
    assert "stopped" in supervised.project.log_file("slow").read_text().splitlines()[-1]
    assert heartbeat_stopped("slow") and heartbeat_stopped("idle")
    assert slow is not None and not alive(slow)
    assert sorted(p.name for p in supervised.project.run_dir.iterdir()) == []


def test_a_hung_child_is_killed_and_restarted(supervised: Supervised) -> None:
    assert supervised.start("idle", "counter").returncode == 0
    idle = supervised.holder("idle")
    assert idle is not None
    os.kill(idle, signal.SIGSTOP)
    try:
        new = wait_for(lambda: (pid := supervised.holder("idle")) not in (None, idle) and pid, timeout=60,
                       message="the hung child replaced")
    finally:
        if alive(idle):
            os.kill(idle, signal.SIGKILL)
    assert parent_of(new) == supervised.holder(supervisor.NAME)
    log = (supervised.project.log_dir / "supervisor.log").read_text()
    assert "idle is hung (no heartbeat for" in log and f"killing it (pid {idle})" in log
    view = supervision_children(supervised)
    assert view["idle"]["hung_kills"] == 1


def supervision_children(supervised: Supervised) -> dict[str, dict]:
    out = supervised.project.manage("shell", "-c", "import json; from daemons.process import supervision; "
                                    "print(json.dumps(supervision.ask('status')))")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    return {child["label"]: child for child in answer["children"]}


def test_restartdaemon_name_restarts_the_child_under_the_supervisor(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    parent, counter, idle = (supervised.holder(n) for n in (supervisor.NAME, "counter", "idle"))
    restarted = supervised.project.manage("restartdaemon", "counter", "idle", timeout=90)
    assert restarted.returncode == 0, restarted.stderr
    assert f"counter restarted: pid {counter} stopped" in restarted.stdout
    assert f"idle restarted: pid {idle} stopped" in restarted.stdout
    new = supervised.holder("counter")
    assert new not in (None, counter) and parent_of(new) == parent
    assert "not restarted" not in (supervised.project.log_dir / "supervisor.log").read_text()
    # Still supervised: a later kill -9 is restarted.
    os.kill(new, signal.SIGKILL)
    wait_for(lambda: (pid := supervised.holder("counter")) not in (None, new) and pid, timeout=30,
             message="the restarted child restarted again")


def test_restartdaemon_all_restarts_the_supervisor_with_its_children(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    parent, counter = supervised.holder(supervisor.NAME), supervised.holder("counter")
    restarted = supervised.project.manage("restartdaemon", "--all", timeout=90)
    assert restarted.returncode == 0, restarted.stderr
    new_parent = supervised.holder(supervisor.NAME)
    assert new_parent not in (None, parent) and f"pid {new_parent} started with counter, idle" in restarted.stdout
    new = supervised.holder("counter")
    assert new not in (None, counter) and parent_of(new) == new_parent
    assert parent is not None and not alive(parent)


def test_rundaemon_all_detach_leaves_running_daemons_alone(supervised: Supervised) -> None:
    standalone = supervised.project.start("counter")
    started = supervised.start("counter", "idle")
    assert started.returncode == 0, started.stderr
    assert f"counter already running (pid {standalone}); left alone" in started.stdout
    assert supervised.holder("counter") == standalone
    idle = supervised.holder("idle")
    assert idle is not None and parent_of(idle) == supervised.holder(supervisor.NAME)
    again = supervised.start("counter", "idle")
    assert again.returncode == 0, again.stderr
    assert f"{supervisor.NAME} already running" in again.stdout
    assert supervised.holder("idle") == idle
    stopped = supervised.project.manage("stopdaemon", "--all", timeout=60)
    assert stopped.returncode == 0 and f"counter stopped (pid {standalone})" in stopped.stdout


def test_ps_tells_the_processes_apart_and_debug_reaches_later_children(supervised: Supervised) -> None:
    assert supervised.start("counter", "idle").returncode == 0
    parent, idle = supervised.holder(supervisor.NAME), supervised.holder("idle")
    assert parent is not None and idle is not None

    def cmdline(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()

    assert cmdline(parent) == "daemons: supervisor (counter, idle)"
    assert cmdline(idle) == "daemons: idle[0]"
    os.kill(parent, signal.SIGUSR1)
    log = supervised.project.log_dir / "supervisor.log"
    wait_for(lambda: "children started from now on log at DEBUG" in log.read_text(), message="the toggle")
    os.kill(idle, signal.SIGKILL)
    new = wait_for(lambda: (pid := supervised.holder("idle")) not in (None, idle) and pid, timeout=30,
                   message="a new idle child")
    # The idle daemon says its idle ticks at DEBUG only.
    line = f"pid={new} daemon=idle daemons.idle: idle tick"
    wait_for(lambda: line in supervised.project.log_file("idle").read_text(), timeout=30,
             message="DEBUG lines from the new child")


def test_a_child_killed_during_a_database_outage_comes_back_with_the_database(supervised: Supervised,
                                                                              private_pg) -> None:
    from tests.pg import pg_ctl

    cluster, pg_database = private_pg
    env = {"DATABASE_URL": pg_database, "DAEMONS_RESTART_BACKOFF_CAP": "1"}
    supervised.project.env.update(env)
    assert supervised.start("onboarding", "idle").returncode == 0
    onboarding = supervised.holder("onboarding")
    assert onboarding is not None
    log = supervised.project.log_dir / "supervisor.log"
    pg_ctl(cluster, "stop")
    try:
        os.kill(onboarding, signal.SIGKILL)
        wait_for(lambda: log.read_text().count("cannot reach the database") >= 3, timeout=30,
                 message="failed restarts during the outage")
        status = supervised.project.manage("daemonstatus", "onboarding", "--json")
        assert json.loads(status.stdout)[0]["state"] == "restarting"
        with override_settings(DAEMONS_RUN_DIR=str(supervised.project.run_dir), DAEMONS_HEALTH_EXPECTED="onboarding"):
            response = Client().get("/daemons/health/")
        assert response.status_code == 503 and response.json()["daemons"] == {"onboarding": "restarting"}
        time.sleep(4)  # the scenario: the server stays down for 4 s
    finally:
        pg_ctl(cluster, "start")
    new = wait_for(lambda: (pid := supervised.holder("onboarding")) not in (None, onboarding) and pid, timeout=30,
                   message="onboarding back with the database")
    assert parent_of(new) == supervised.holder(supervisor.NAME)
    wait_for(lambda: supervised.project.manage("daemonstatus", "onboarding").returncode == 0, timeout=30,
             message="onboarding running")


def test_restart_backoff_doubles_up_to_the_configured_cap(settings) -> None:
    settings.DAEMONS_RESTART_BACKOFF = 0.5
    settings.DAEMONS_RESTART_BACKOFF_CAP = 3
    assert [children.restart_backoff(n) for n in range(1, 7)] == [0.5, 1, 2, 3, 3, 3]

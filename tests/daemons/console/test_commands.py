"""Real-process tests of the operator's commands: start semantics, restart, signal, stop --all, status views."""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import matched, wait_for

pytestmark = pytest.mark.process

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def default_signals() -> None:
    """preexec_fn: the child starts with default signal handlers, whatever this process ignores."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def status_json(project, *args: str) -> list[dict]:
    return json.loads(project.manage("daemonstatus", *args, "--json").stdout)


def pid_of(text: str, before: str = "") -> int:
    return int(matched(rf"{re.escape(before)}\(?pid (\d+)", text, group=1))


# --- start --------------------------------------------------------------------------------

def test_starting_a_running_daemon_exits_zero_and_names_its_pid(project) -> None:
    pid = project.start("counter")
    again = project.manage("rundaemon", "counter", "--detach")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"counter already running (pid {pid})"
    assert status_json(project, "counter")[0]["pid"] == pid


def test_a_stale_pid_file_is_replaced_by_the_new_daemon(project) -> None:
    # A live process that is not the daemon, named in a file nobody locks.
    bystander = subprocess.Popen(["sleep", "60"], preexec_fn=default_signals)
    try:
        project.run_dir.mkdir(parents=True, exist_ok=True)
        project.pid_file("counter").write_text(f"{bystander.pid}\n")
        pid = project.start("counter")
        assert pid != bystander.pid
        assert project.pid_file("counter").read_text() == f"{pid}\n"
        assert alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def hung_slow_daemon(project, tmp_path: Path) -> int:
    """A `slow` daemon stuck in a tick that reports no progress, until daemonstatus calls it hung."""
    marker = tmp_path / "marker"
    pid = project.start("slow", env={"TESTAPP_TICK_SECONDS": "120", "TESTAPP_TICKS_FILE": str(marker),
                                     "TESTAPP_PROGRESS_LIMIT": "1"})
    wait_for(lambda: marker.exists(), 30, "the slow tick to begin")
    wait_for(lambda: status_json(project, "slow")[0]["state"] == "hung", 60, "the daemon to read as hung")
    return pid


def test_starting_a_hung_daemon_fails_with_the_reason_and_restart_kill_replaces_it(project, tmp_path) -> None:
    pid = hung_slow_daemon(project, tmp_path)
    result = project.manage("rundaemon", "slow", "--detach")
    assert result.returncode == 1
    assert re.fullmatch(rf"slow: already running \(pid {pid}\) but hung: no heartbeat for \d+s; "
                        r"restart it with `restartdaemon slow --kill`\n", result.stderr.replace("CommandError: ", ""))
    restarted = project.manage("restartdaemon", "slow", "--kill", "--timeout", "1",
                               env={"TESTAPP_TICK_SECONDS": "0"})
    assert restarted.returncode == 0, restarted.stderr
    new_pid = pid_of(restarted.stdout, "killed, ")
    assert f"pid {pid} killed" in restarted.stdout
    assert not alive(pid) and alive(new_pid)


# --- restart ------------------------------------------------------------------------------

def test_restart_stops_then_starts_detached_and_reports_both_pids(project) -> None:
    old = project.start("counter", "--instance", "2")
    result = project.manage("restartdaemon", "counter", "--instance", "2")
    assert result.returncode == 0, result.stderr
    match = re.match(r"counter\.2 restarted: pid (\d+) stopped, pid (\d+) started; log: (.+)$", result.stdout)
    assert match, result.stdout
    assert int(match[1]) == old
    new = int(match[2])
    assert new != old and not alive(old)
    assert Path(match[3]) == project.log_file("counter", 2)
    row = status_json(project, "counter")[1]
    assert (row["instance"], row["state"], row["pid"]) == (2, "running", new)


def test_restart_of_a_stopped_daemon_starts_it(project) -> None:
    result = project.manage("restartdaemon", "idle")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("idle was not running; started (pid ")
    assert status_json(project, "idle")[0]["pid"] == pid_of(result.stdout)


# --- signal -------------------------------------------------------------------------------

def test_reopen_logs_makes_the_daemon_write_a_new_file_after_rotation(project) -> None:
    pid = project.start("counter")
    log = project.log_file("counter")
    wait_for(lambda: log.exists() and "started" in log.read_text(), 30, "the daemon's log")
    log.rename(log.with_suffix(".log.1"))
    result = project.manage("signaldaemon", "counter", "reopen-logs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"counter: sent reopen-logs (pid {pid})"
    wait_for(lambda: log.exists() and "reopened log files" in log.read_text(), 30, "a new log file")


def test_toggle_debug_switches_the_log_level(project) -> None:
    project.start("idle")
    log = project.log_file("idle")
    assert project.manage("signaldaemon", "idle", "toggle-debug").returncode == 0
    wait_for(lambda: "log level is now DEBUG" in log.read_text(), 30, "DEBUG logging")
    assert project.manage("signaldaemon", "idle", "toggle-debug").returncode == 0
    wait_for(lambda: "log level is now INFO" in log.read_text(), 30, "INFO logging again")


def test_wake_makes_the_daemon_tick_now(project, tmp_path) -> None:
    ticks = tmp_path / "ticks"
    env = {"TESTAPP_INTERVAL": "300", "TESTAPP_TICKS_FILE": str(ticks)}
    project.start("counter", "--instance", "1", env=env)
    wait_for(lambda: ticks.exists() and len(ticks.read_text().splitlines()) == 1, 30, "the first tick")
    result = project.manage("signaldaemon", "counter", "wake", "--instance", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("counter.1: sent wake (pid ")
    wait_for(lambda: len(ticks.read_text().splitlines()) == 2, 30, "a tick long before the 300 s interval")


def test_signal_never_reaches_a_pid_from_a_stale_file(project) -> None:
    # SIGHUP would end `sleep`: it must survive, and the command must say nothing runs.
    bystander = subprocess.Popen(["sleep", "60"], preexec_fn=default_signals)
    try:
        project.run_dir.mkdir(parents=True, exist_ok=True)
        project.pid_file("counter").write_text(f"{bystander.pid}\n")
        for action in ("reopen-logs", "toggle-debug", "wake"):
            result = project.manage("signaldaemon", "counter", action)
            assert result.returncode == 3
            assert result.stderr.strip().endswith(f"counter: not running; nothing to {action}")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_an_unknown_action_is_a_usage_error(project) -> None:
    result = project.manage("signaldaemon", "counter", "explode")
    assert result.returncode == 2
    assert "invalid choice: 'explode'" in result.stderr
    assert "Traceback" not in result.stderr


# --- stop ---------------------------------------------------------------------------------

def test_stop_all_stops_every_instance_of_every_daemon_and_says_which(project) -> None:
    pids = {"counter": project.start("counter"), "counter.2": project.start("counter", "--instance", "2"),
            "idle": project.start("idle")}
    result = project.manage("stopdaemon", "--all")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(f"{label} stopped (pid {pid})" for label, pid in pids.items())
    assert not any(alive(pid) for pid in pids.values())
    assert not list(project.run_dir.glob("*.pid"))
    again = project.manage("stopdaemon", "--all")
    assert (again.returncode, again.stdout.strip()) == (0, "no daemon is running on this host")


def test_stop_shows_progress_while_it_waits(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    # A tick long enough that the stop still waits for it once `stopdaemon` is up on a loaded machine,
    # and short enough to end well inside the stop's 20 s.
    pid = project.start("slow", env={"TESTAPP_TICK_SECONDS": "10", "TESTAPP_TICKS_FILE": str(marker)})
    wait_for(lambda: marker.exists() and marker.read_text() == "in tick\n", 30, "the slow tick to begin")
    result = project.manage("stopdaemon", "slow", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"waiting for slow (pid {pid}): 1s of 20s"
    assert lines[-1] == f"slow stopped (pid {pid})"


def test_stop_needs_a_name_or_all_not_both(project) -> None:
    for args in ([], ["counter", "--all"]):
        result = project.manage("stopdaemon", *args)
        assert result.returncode == 2
        assert "NAME or --all" in result.stderr and "Traceback" not in result.stderr


# --- status -------------------------------------------------------------------------------

def test_status_all_lists_every_instance_of_every_registered_daemon(project) -> None:
    from daemons import registry

    project.start("counter")
    project.start("counter", "--instance", "3")
    rows = status_json(project, "--all")
    assert {(row["name"], row["instance"]) for row in rows} == {
        *((name, 0) for name in registry.names()), ("counter", 3)}
    assert {row["state"] for row in rows if row["name"] == "counter"} == {"running"}
    assert project.manage("daemonstatus", "--all", "counter").returncode == 2


def test_table_keeps_one_line_per_instance_and_shows_the_last_error_on_it(project) -> None:
    project.start("failing")
    project.start("counter")
    wait_for(lambda: status_json(project, "failing")[0]["errors"], 30, "a failed tick")
    result = project.manage("daemonstatus", "failing", "counter")
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert lines[1].startswith("failing ")
    assert "last error: RuntimeError: the failing daemon failed on purpose" in lines[1]
    assert lines[2].startswith("counter ") and "running" in lines[2]


def test_table_says_starting_before_the_first_tick_is_done(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    # A first tick that outlasts daemonstatus's start-up even on a loaded machine (3 s did not).
    env = {"TESTAPP_INTERVAL": "20", "TESTAPP_TICK_SECONDS": "10", "TESTAPP_TICKS_FILE": str(marker)}
    project.start("slow", env=env)
    wait_for(lambda: marker.exists(), 30, "the first tick to begin")
    line = project.manage("daemonstatus", "slow", env=env).stdout.splitlines()[1]
    assert "starting" in line and "never" not in line


def run_in_pty(project, *args: str, env: dict[str, str] | None = None) -> str:
    """Run manage.py with a terminal as its stdout (so colour is on by default); return what it wrote."""
    import sys

    from tests.conftest import BASE_DIR

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=BASE_DIR, env={**project.env, **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        proc.communicate(timeout=60)
    return b"".join(chunks).decode()


def test_table_is_coloured_by_state_on_a_terminal_unless_no_color(project) -> None:
    project.start("counter")
    coloured = run_in_pty(project, "daemonstatus", "counter", "idle")
    running = next(line for line in coloured.splitlines() if line.startswith("counter"))
    stopped = next(line for line in coloured.splitlines() if line.startswith("idle"))
    assert "\x1b[32;1mrunning" in running  # Django's SUCCESS: green
    assert "\x1b[31mstopped" in stopped  # Django's NOTICE: red
    assert not ANSI.search(run_in_pty(project, "daemonstatus", "counter", env={"NO_COLOR": "1"}))
    assert not ANSI.search(run_in_pty(project, "daemonstatus", "counter", "--no-color"))
    assert ANSI.search(project.manage("daemonstatus", "counter", "--force-color", env={"NO_COLOR": "1"}).stdout)


def test_watch_redraws_until_ctrl_c_and_exits_zero(project, tmp_path) -> None:
    out = tmp_path / "out"
    err = tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = project.popen("daemonstatus", "counter", "--watch", "0.2", stdout=stdout, stderr=stderr,
                             preexec_fn=default_signals)
    try:
        wait_for(lambda: out.read_text().count("Every 0.2s: daemonstatus") >= 2, 60, "two redraws")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "counter " in out.read_text()
    assert "Traceback" not in err.read_text() and "KeyboardInterrupt" not in err.read_text()


# --- reload -------------------------------------------------------------------------------

def test_reload_restarts_the_daemon_when_its_code_changes(project, tmp_path) -> None:
    from tests.testapp import daemons as source_module

    source = Path(source_module.__file__)
    original = source.stat()
    err = tmp_path / "err"
    with err.open("w") as stderr:
        proc = project.popen("rundaemon", "counter", "--reload", stdout=subprocess.DEVNULL, stderr=stderr,
                             preexec_fn=default_signals)
    bumps = iter(range(1, 10_000))

    def touched_and_restarted(first: int) -> int | None:
        # The watcher compares modification times once a second, from its first look on; bump ours until
        # it sees one. Only while the first daemon is alive (the next starts once it has exited): a bump
        # the second one's watcher saw would start a third, which a Ctrl-C could meet still starting.
        row = status_json(project, "counter")[0]
        if alive(first):
            os.utime(source, ns=(original.st_atime_ns, original.st_mtime_ns + next(bumps) * 1_000_000_000))
        return row["pid"] if row["state"] == "running" and row["pid"] not in (None, first) else None

    try:
        first = wait_for(lambda: status_json(project, "counter")[0]["pid"], 60, "the daemon to run")
        second = wait_for(lambda: touched_and_restarted(first), 60, "a new daemon after the change")
        assert not alive(first)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not alive(second)
        assert not project.pid_file("counter").exists()
    finally:
        os.utime(source, ns=(original.st_atime_ns, original.st_mtime_ns))
        proc.kill()
        proc.wait()
    log = err.read_text()
    assert "changed; restarting the daemon" in log
    assert "Traceback" not in log


def test_reload_reports_a_killed_daemon_as_a_shell_does(project) -> None:
    proc = project.popen("rundaemon", "counter", "--reload", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = wait_for(lambda: status_json(project, "counter")[0]["pid"], 60, "the daemon to run")
    os.kill(daemon, signal.SIGKILL)  # as the OOM killer would
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL


def test_rundaemon_help_lists_the_registered_daemons(project) -> None:
    from daemons import registry

    result = project.manage("rundaemon", "--help")
    assert result.returncode == 0
    assert f"the daemon's registered name: {', '.join(registry.names())}" in " ".join(result.stdout.split())



def test_restart_starts_nothing_while_the_old_daemon_still_runs(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    env = {"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "60", "DAEMONS_STOP_TIMEOUT": "30"}
    pid = project.start("slow", env=env)
    wait_for(lambda: marker.exists(), 30, "a tick in progress")
    result = project.manage("restartdaemon", "slow", "--timeout", "0.5", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"slow: pid {pid} did not stop within 0.5s; not restarted (try --kill)")
    assert alive(pid)
    assert status_json(project, "slow")[0]["pid"] == pid


# --- what every command shares --------------------------------------------------------------

KIT_COMMANDS = ["rundaemon", "stopdaemon", "restartdaemon", "signaldaemon", "daemonstatus", "makedaemon",
                "daemonconfig", "daemonshell"]


def test_every_command_prints_the_kits_version_not_djangos(project) -> None:
    from importlib.metadata import version

    import daemons

    assert daemons.__version__ == version("django-daemon-kit")
    for command in KIT_COMMANDS:
        result = project.manage(command, "--version")
        assert (result.returncode, result.stdout.strip()) == (0, daemons.__version__), (command, result.stderr)


@pytest.mark.parametrize("args", [
    *[[command, "--no-such-option"] for command in KIT_COMMANDS],
    ["daemonconfig", "counter", "--all", "--systemd"],
    ["daemonconfig", "--systemd"],
    ["daemonconfig", "counter", "--systemd", "--project-dir", "relative/dir"],
    ["daemonstatus", "counter", "--all"],
    ["stopdaemon"],
    ["signaldaemon", "counter", "explode"],
    ["makedaemon", "x", "--every", "often"],
    ["rundaemon", "counter", "idle", "--reload"],
    ["rundaemon"],
    ["rundaemon", "counter", "--all"],
    ["rundaemon", "counter", "idle", "--once"],
], ids=" ".join)
def test_a_usage_error_exits_2_with_one_line_in_every_command(project, args) -> None:
    result = project.manage(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].strip()


def test_an_unmigrated_database_says_to_run_migrate(project, tmp_path) -> None:
    result = project.manage("rundaemon", "counter", "--once",
                            env={"DATABASE_URL": f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "run `manage.py migrate`" in result.stderr, result.stderr
    # A database out of reach is still said to be so.
    result = project.manage("rundaemon", "counter", "--once",
                            env={"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"})
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr and "migrate" not in result.stderr, result.stderr

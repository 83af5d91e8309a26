"""Real-process tests of rundaemon, stopdaemon and daemonstatus."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemons.process import pidfile
from daemons.process.exits import Exit
from tests.conftest import wait_for
from tests.support.processes import alive

pytestmark = pytest.mark.process


def test_detach_then_status_running_then_stop(project) -> None:
    pid = project.start("counter")
    assert alive(pid)
    assert project.pid_file("counter").read_text() == f"{pid}\n"
    status = project.manage("daemonstatus", "counter", "--json")
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert row["state"] == "running" and row["pid"] == pid and row["rss_kib"] > 1000
    assert row["info"] == "counting"
    wait_for(lambda: "counted 1 tick" in project.log_file("counter").read_text(), message="a logged tick")

    stopped = project.manage("stopdaemon", "counter")
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not project.pid_file("counter").exists()
    assert not alive(pid)
    status = project.manage("daemonstatus", "counter")
    assert status.returncode == 3 and "stopped" in status.stdout


def test_second_start_is_refused_and_first_untouched(project) -> None:
    pid = project.start("counter")
    # A detached start is LSB's `start`: a daemon that already runs is success, and untouched.
    second = project.manage("rundaemon", "counter", "--detach")
    assert second.returncode == 0
    assert f"already running (pid {pid})" in second.stdout
    assert project.pid_file("counter").read_text() == f"{pid}\n"
    assert alive(pid)
    foreground = project.manage("rundaemon", "counter")
    assert foreground.returncode != 0 and f"already running (pid {pid})" in foreground.stderr


def test_kill_9_leaves_stale_file_that_does_not_block_restart(project) -> None:
    pid = project.start("counter")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pidfile.is_locked(project.pid_file("counter")), message="the lock to die with the process")
    status = project.manage("daemonstatus", "counter")
    assert status.returncode == 1 and "stale" in status.stdout
    new_pid = project.start("counter")
    assert new_pid != pid
    assert project.manage("daemonstatus", "counter").returncode == 0


def test_sigterm_while_idle_ends_the_wait_at_once(project, tmp_path) -> None:
    ticks = tmp_path / "ticks"
    pid = project.start("counter", env={"TESTAPP_INTERVAL": "3600", "TESTAPP_TICKS_FILE": str(ticks)})
    wait_for(lambda: ticks.exists(), message="the first tick")
    os.kill(pid, signal.SIGTERM)
    # An hour's wait ahead: an exit within seconds is the stop ending it, however loaded the machine.
    wait_for(lambda: not alive(pid), timeout=20, message="the exit after SIGTERM")
    assert not project.pid_file("counter").exists()
    log = project.log_file("counter").read_text()
    assert log.index("stopping on signal") < log.index("stopped")
    assert len(ticks.read_text().splitlines()) == 1


def test_foreground_sigint_exits_zero_and_logs_to_stderr(project) -> None:
    proc = project.popen("rundaemon", "counter")
    wait_for(lambda: project.pid_file("counter").exists() and pidfile.read_holder(project.pid_file("counter"), 0),
             message="the foreground daemon to hold its lock")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    started = next(line for line in err.splitlines() if "started" in line)
    assert "daemon=counter" in started and started.count("pid") == 1, started
    assert not project.pid_file("counter").exists()


def test_unwritable_log_directory_fails_the_start_with_its_error(project, tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = project.manage("rundaemon", "counter", "--detach", env={"DAEMONS_LOG_DIR": str(blocker / "log")})
    assert result.returncode != 0
    assert f"DAEMONS_LOG_DIR (from the environment): {blocker} is a file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not pidfile.is_locked(project.pid_file("counter"))


def test_unreachable_database_fails_the_start(project, tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = project.manage("rundaemon", "counter", "--detach", env={"DATABASE_URL": f"sqlite:///{blocker}/db.sqlite3"})
    assert result.returncode == 1, result.stdout
    # One line: who, what failed, and the driver's reason; no PID file left claiming a daemon.
    assert result.stderr == "CommandError: counter: cannot reach the database: unable to open database file\n"
    assert result.stdout == "" and not project.pid_file("counter").exists()


def test_once_runs_one_tick_and_exits_with_a_one_line_summary(project, tmp_path) -> None:
    ticks = tmp_path / "ticks"
    result = project.manage("rundaemon", "counter", "--once", env={"TESTAPP_TICKS_FILE": str(ticks)})
    assert result.returncode == 0, result.stderr
    assert len(ticks.read_text().splitlines()) == 1
    assert not project.pid_file("counter").exists()
    [line] = result.stdout.splitlines()
    assert line.startswith("counter: counted 1 tick in ") and line.endswith(" ms")
    idle = project.manage("rundaemon", "idle", "--once")
    assert idle.returncode == 0 and idle.stdout.startswith("idle: idle tick in ")


def test_once_exits_non_zero_when_the_tick_raised(project) -> None:
    result = project.manage("rundaemon", "failing", "--once")
    assert result.returncode == Exit.TICK_FAILED
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: failing: tick failed after ")
    assert last.endswith("RuntimeError: the failing daemon failed on purpose")
    assert not project.pid_file("failing").exists()


def test_a_second_start_from_another_run_directory_is_refused(project, tmp_path) -> None:
    pid = project.start("counter")
    wait_for(lambda: project.manage("daemonstatus", "counter").returncode == 0, message="a heartbeat")
    other = {"DAEMONS_RUN_DIR": str(tmp_path / "other-run"), "DAEMONS_LOG_DIR": str(tmp_path / "other-log")}
    # A detached start is an LSB start: the daemon already runs, so that is success, and nothing starts.
    result = project.manage("rundaemon", "counter", "--detach", env=other)
    assert result.returncode == 0 and f"counter already running (pid {pid})" in result.stdout, result.stderr
    for args in (["rundaemon", "counter"], ["rundaemon", "counter", "--once"]):
        result = project.manage(*args, env=other)
        assert result.returncode == 1, result.stdout
        [line] = result.stderr.strip().splitlines()
        assert f"counter: already running on this host (pid {pid})" in line and "another run directory" in line
    assert alive(pid) and not (tmp_path / "other-run" / "counter.pid").exists()
    # Another instance number is another daemon.
    assert project.manage("rundaemon", "counter", "--instance", "2", "--once", env=other).returncode == 0


def test_unknown_daemon_lists_registered_ones(project) -> None:
    for command in (["rundaemon", "nope"], ["stopdaemon", "nope"], ["daemonstatus", "nope"]):
        result = project.manage(*command)
        assert result.returncode == 1
        assert "unknown daemon 'nope'; registered daemons:" in result.stderr and "onboarding" in result.stderr
        assert "Traceback" not in result.stderr


def test_stop_when_not_running_says_so_and_exits_zero(project) -> None:
    result = project.manage("stopdaemon", "counter")
    assert result.returncode == 0 and "not running" in result.stdout


def test_stop_never_signals_a_pid_from_a_stale_file(project) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        project.run_dir.mkdir(parents=True, exist_ok=True)
        project.pid_file("counter").write_text(f"{bystander.pid}\n")
        result = project.manage("stopdaemon", "counter")
        assert result.returncode == 0 and "not running" in result.stdout
        pid = project.start("counter")
        assert pid != bystander.pid
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_tick_exception_is_logged_reported_to_sentry_and_daemon_keeps_running(project) -> None:
    from tests.sentry_sink import SentrySink

    with SentrySink() as sink:
        pid = project.start("failing", env={"SENTRY_DSN": sink.dsn})
        log = project.log_file("failing")
        wait_for(lambda: "same error 10 times since" in log.read_text(), message="a summary of the repeated error")
        assert alive(pid)
        # The traceback is logged once; the repeats are summarised, not flooded.
        assert log.read_text().count("Traceback") == 1
        wait_for(lambda: sink.events(), message="an event at the Sentry sink")
        [event] = sink.events()
        assert event["tags"]["daemon"] == "failing"
        [exc] = event["exception"]["values"]
        assert exc["type"] == "RuntimeError" and "failed on purpose" in exc["value"]
        assert "user" not in event or not event["user"].get("email")


def test_wake_ends_the_wait_at_once(project, tmp_path, settings) -> None:
    from daemons.cluster.wakeup import wake

    ticks = tmp_path / "ticks"
    project.start("counter", env={"TESTAPP_INTERVAL": "3600", "TESTAPP_TICKS_FILE": str(ticks)})
    wait_for(lambda: ticks.exists() and len(ticks.read_text().splitlines()) == 1, message="the first tick")
    assert wake("counter", project.run_dir) == 1
    wait_for(lambda: len(ticks.read_text().splitlines()) == 2, timeout=2, message="a tick right after the wake-up")


def test_an_idle_daemon_sleeps_until_something_is_due(project, tmp_path) -> None:
    """No thread of a daemon between two hourly ticks wakes up on a timer (the watch thread used to poll)."""
    from daemons.models import Heartbeat

    pid = project.start("counter", env={"TESTAPP_INTERVAL": "3600", "TESTAPP_TICKS_FILE": str(tmp_path / "t")})
    # Start-up ends with the first tick and the heartbeat written after it: only the wait that follows is
    # measured, not the start-up's own work on a loaded machine.
    wait_for(lambda: Heartbeat.objects.filter(name="counter", pid=pid, last_tick_at__isnull=False).exists(),
             timeout=30, message="the first tick's heartbeat")
    wait_for(lambda: len(list(Path(f"/proc/{pid}/task").iterdir())) >= 2, message="the watch thread")

    def wakeups() -> int:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        return total

    before = wakeups()
    time.sleep(2)  # the measurement window, not a synchronisation
    assert wakeups() - before < 5


@pytest.fixture
def mounted(tmp_path: Path):
    """Mount a tiny tmpfs with the given options (as root only, where mount works); unmount it afterwards."""
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(directory: Path) -> None:
    """Use up every block of the filesystem holding `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", [["--detach"], [], ["--once"], ["--all-supervised"]])
def test_a_full_run_directory_is_one_line_and_leaves_no_pid_file(project, mounted, mode) -> None:
    run_dir = mounted("run", "size=16k")
    fill(run_dir)
    args = ["counter", "idle", "--detach"] if mode == ["--all-supervised"] else ["counter", *mode]
    result = project.manage("rundaemon", *args, env={"DAEMONS_RUN_DIR": str(run_dir)})
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(run_dir) in result.stderr and "No space left on device" in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["filler"]


@pytest.mark.parametrize("which", ["DAEMONS_RUN_DIR", "DAEMONS_LOG_DIR"])
def test_a_read_only_directory_is_one_line(project, mounted, which) -> None:
    directory = mounted("ro", "ro,size=16k")
    for args in (["counter", "--detach"], ["counter", "idle", "--detach"]):
        result = project.manage("rundaemon", *args, env={which: str(directory)})
        assert result.returncode == 1, result.stdout
        # The system checks see it first (daemons.checks): named, no traceback.
        assert "Traceback" not in result.stderr, result.stderr
        assert str(directory) in result.stderr and "not writable" in result.stderr


def test_no_socket_is_left_by_a_forced_stop(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    pid = project.start("slow", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "60",
                                     "DAEMONS_STOP_TIMEOUT": "30"})
    socket_path = project.run_dir / "slow.sock"
    assert socket_path.exists()
    wait_for(lambda: marker.exists(), message="a tick in progress")
    assert project.manage("stopdaemon", "slow", "--timeout", "0.5").returncode == 1
    assert project.manage("stopdaemon", "slow", "--timeout", "5").returncode == 0  # the second SIGTERM: exit now
    assert not alive(pid)
    assert not socket_path.exists() and not project.pid_file("slow").exists()

"""Real signals to real daemon processes: stop deadlines, forced stops, log rotation, log level."""
from __future__ import annotations

import os
import signal
import time

import pytest

from daemons.process.exits import Exit
from daemons.process.signals import SignalStop
from tests.conftest import wait_for
from tests.support.processes import alive

pytestmark = pytest.mark.process


def test_graceful_stop_lets_the_tick_in_progress_finish(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    proc = project.popen("rundaemon", "slow", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "1"})
    wait_for(lambda: marker.exists() and marker.read_text() == "in tick\n", message="a tick in progress")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert marker.read_text() == "tick done\n"
    assert not project.pid_file("slow").exists()


def test_stop_deadline_abandons_the_tick_logs_it_and_exits_non_zero(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    proc = project.popen("rundaemon", "slow", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "60",
                                                   "DAEMONS_STOP_TIMEOUT": "1"})
    wait_for(lambda: marker.exists(), message="a tick in progress")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # Well before the 60 s tick could end: the deadline ended it, and not before its second had passed.
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == Exit.ABANDONED
    assert time.monotonic() - began >= 1
    assert "stop deadline of 1 s passed; abandoning a tick running for" in err
    assert "sleeping on purpose" in err
    assert marker.read_text() == "in tick\n"
    assert not project.pid_file("slow").exists()


def test_second_sigterm_during_graceful_stop_exits_at_once(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    log = project.log_file("stubborn")
    pid = project.start("stubborn", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "60",
                                         "DAEMONS_STOP_TIMEOUT": "60"})
    wait_for(lambda: marker.exists(), message="a tick in progress")
    first = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    # The scenario: a second signal arrives while the first stop is under way, which the tick has seen,
    # and later than a copy of the first would (see the next test).
    wait_for(lambda: "stop requested" in marker.read_text(), message="the tick to see the first stop")
    wait_for(lambda: time.monotonic() - first > SignalStop.REPEAT_WINDOW, message="the repeat window to pass")
    assert alive(pid)
    os.kill(pid, signal.SIGTERM)
    # Long before the 60 s stop deadline or the end of the tick: the second SIGTERM ended it.
    wait_for(lambda: not alive(pid), timeout=20, message="exit after the second SIGTERM")
    assert marker.read_text() == "in tick\nstop requested\n"
    assert "stop deadline" not in log.read_text() and "stopped" not in log.read_text()
    assert not project.pid_file("stubborn").exists()


def test_a_copy_of_the_stop_signal_is_not_a_second_request() -> None:
    # timeout(1) signals its command, then its process group: the same SIGINT twice, microseconds apart.
    now = [100.0]
    forced: list[float] = []
    stop = SignalStop(force_exit=lambda: forced.append(now[0]), clock=lambda: now[0])
    stop._handle(signal.SIGINT, None)
    now[0] += 0.001
    stop._handle(signal.SIGINT, None)
    assert stop.is_set() and forced == []
    now[0] += SignalStop.REPEAT_WINDOW
    stop._handle(signal.SIGTERM, None)  # a second request: a person's second Ctrl-C, a second stopdaemon
    assert forced == [now[0]]


def test_sighup_reopens_the_log_after_rotation_and_no_line_is_lost(project, tmp_path) -> None:
    ticks = tmp_path / "ticks"
    log = project.log_file("counter")
    pid = project.start("counter", env={"TESTAPP_INTERVAL": "0.005", "TESTAPP_TICKS_FILE": str(ticks)})
    wait_for(lambda: log.read_text().count("counted 1 tick") > 20, message="lines in the log")
    rotated = log.with_name("counter.log.1")
    log.rename(rotated)
    # logrotate's `create` mode: a new, empty file with the old mode.
    fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
    os.close(fd)
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: log.read_text().count("counted 1 tick") > 20, message="lines in the new log after SIGHUP")
    assert project.manage("stopdaemon", "counter").returncode == 0
    written = len(ticks.read_text().splitlines())
    old_lines = rotated.read_text().count("counted 1 tick")
    new_lines = log.read_text().count("counted 1 tick")
    assert old_lines + new_lines == written
    assert "reopened log files on SIGHUP" in log.read_text()


def test_sigusr1_toggles_debug_logging(project) -> None:
    log = project.log_file("idle")
    pid = project.start("idle")
    wait_for(lambda: "started" in log.read_text(), message="the daemon to start")
    assert "idle tick" not in log.read_text()
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: "idle tick" in log.read_text(), message="DEBUG lines after SIGUSR1")
    assert "log level is now DEBUG" in log.read_text()
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: "log level is now INFO" in log.read_text(), message="back to INFO")
    after = log.read_text().split("log level is now INFO", 1)[1]
    ticks_before = log.read_text().count("idle tick")
    wait_for(lambda: project.manage("daemonstatus", "idle").returncode == 0, message="status")
    # Several ticks later still no new DEBUG lines.
    from daemons.models import Heartbeat

    ticks_seen = Heartbeat.objects.get(name="idle").last_tick_at
    wait_for(lambda: Heartbeat.objects.get(name="idle").last_tick_at != ticks_seen, message="more ticks")
    assert log.read_text().count("idle tick") == ticks_before
    assert "idle tick" not in after


def test_crash_outside_a_tick_is_logged_reported_and_exits_non_zero(project) -> None:
    from tests.sentry_sink import SentrySink

    with SentrySink() as sink:
        proc = project.popen("rundaemon", "crashing", env={"SENTRY_DSN": sink.dsn})
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 70
        assert "crashing crashed: the crashing daemon crashed on purpose" in err and "Traceback" in err
        wait_for(lambda: sink.events(), message="the crash at the Sentry sink")
        assert sink.events()[0]["tags"]["kind"] == "crash"
    assert not project.pid_file("crashing").exists()


def test_stopdaemon_times_out_then_kill_escalates(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    pid = project.start("slow", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "60",
                                     "DAEMONS_STOP_TIMEOUT": "30"})
    wait_for(lambda: marker.exists(), message="a tick in progress")
    result = project.manage("stopdaemon", "slow", "--timeout", "0.5")
    assert result.returncode == 1
    assert f"slow (pid {pid}) did not stop within 0.5s; try --kill" in result.stderr
    assert alive(pid)
    # A second stopdaemon is a second SIGTERM: the daemon exits at once.
    result = project.manage("stopdaemon", "slow", "--timeout", "2")
    assert result.returncode == 0 and f"stopped (pid {pid})" in result.stdout

    marker.unlink()
    pid = project.start("slow", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "60",
                                     "DAEMONS_STOP_TIMEOUT": "30"})
    wait_for(lambda: marker.exists(), message="a tick in progress")
    result = project.manage("stopdaemon", "slow", "--timeout", "0.5", "--kill")
    # Killed is said, and is no success: the tick in flight was cut off.
    assert result.returncode == 1 and f"did not stop within 0.5s; killed (pid {pid})" in result.stdout
    assert "had to kill slow" in result.stderr
    assert not alive(pid)
    assert not project.pid_file("slow").exists()


def test_stopdaemon_rejects_a_bad_timeout(project) -> None:
    result = project.manage("stopdaemon", "counter", "--timeout", "soon")
    assert result.returncode == 2 and "timeout must be a number of seconds, got 'soon'" in result.stderr
    result = project.manage("stopdaemon", "counter", "--timeout", "0")
    assert result.returncode == 2 and "timeout must be more than 0 and at most 3600 seconds, got 0" in result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "3601", "nan", "inf"])
def test_a_number_of_seconds_out_of_range_is_refused_with_the_range(value: str) -> None:
    import argparse

    from daemons.management.commands._base import seconds_type

    with pytest.raises(argparse.ArgumentTypeError,
                       match=rf"^watch interval must be more than 0 and at most 3600 seconds, got {value}$"):
        seconds_type("watch interval")(value)
    assert seconds_type("watch interval")("0.2") == 0.2 and seconds_type("watch interval")("3600") == 3600


def test_installed_handlers_and_wakeup_fd_are_restored_on_the_way_out() -> None:
    from daemons.process import signals

    def mine(signum, frame) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    old_wakeup = signal.set_wakeup_fd(write_fd)
    try:
        with signals.installed() as stop:
            assert signal.getsignal(signal.SIGTERM) == stop._handle
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.set_wakeup_fd(write_fd) == write_fd
        with pytest.raises(RuntimeError), signals.installed():
            raise RuntimeError("the block failed")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGTERM, previous)
        os.close(read_fd)
        os.close(write_fd)

"""daemonstatus: the PID lock combined with the heartbeat."""
from __future__ import annotations

import json
import os
import signal
from datetime import UTC

import pytest

from daemons.console.status import DaemonStatus, worst_exit_code
from daemons.models import Heartbeat
from daemons.process.exits import State
from tests.conftest import wait_for

pytestmark = pytest.mark.process


def status_json(project, name: str) -> tuple[int, dict]:
    result = project.manage("daemonstatus", name, "--json")
    [row] = json.loads(result.stdout)
    return result.returncode, row


def test_json_has_the_monitoring_fields_and_counters(project) -> None:
    pid = project.start("failing")
    wait_for(lambda: status_json(project, "failing")[1]["errors"] >= 2, message="errors counted in the heartbeat")
    code, row = status_json(project, "failing")
    assert code == 0
    assert {"name", "instance", "host", "pid", "state", "interval", "started_at", "stopped_at", "last_heartbeat",
            "last_tick_at", "last_outcome", "last_duration_ms", "processed", "errors", "last_error", "status_text",
            "jobs"} <= row.keys()
    assert (row["name"], row["instance"], row["pid"], row["state"]) == ("failing", 0, pid, "running")
    assert (row["interval"], row["last_outcome"], row["stopped_at"], row["jobs"]) == (0.2, "error", None, None)
    assert isinstance(row["last_duration_ms"], int) and row["last_tick_at"] >= row["started_at"]
    assert "failed on purpose" in row["last_error"]
    table = project.manage("daemonstatus", "failing").stdout
    assert "last error: RuntimeError: the failing daemon failed on purpose" in table


def test_a_stopped_process_holding_its_lock_shows_hung(project) -> None:
    pid = project.start("counter")
    wait_for(lambda: Heartbeat.objects.filter(name="counter", pid=pid).exists(), message="a first heartbeat")
    os.kill(pid, signal.SIGSTOP)
    try:
        # Interval 0.2 s: heartbeats every 1 s, hung after 3 s without one.
        wait_for(lambda: status_json(project, "counter")[1]["state"] == "hung", timeout=8, message="state hung")
        assert project.manage("daemonstatus", "counter").returncode == 4
        # Every other test daemon is stopped (3): the hung one still decides the exit code.
        everything = project.manage("daemonstatus")
        assert "stopped" in everything.stdout and everything.returncode == 4
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: status_json(project, "counter")[1]["state"] == "running", message="running again")


def test_heartbeat_stays_fresh_during_a_long_tick(project, tmp_path) -> None:
    marker = tmp_path / "marker"
    project.start("slow", env={"TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "4",
                               "TESTAPP_INTERVAL": "1"})
    wait_for(lambda: marker.exists(), message="the first tick")
    # Heartbeats come every second (the interval); this tick lasts four.
    wait_for(lambda: Heartbeat.objects.get(name="slow").last_outcome == "busy", timeout=3,
             message="a mid-tick heartbeat")
    assert status_json(project, "slow")[1]["state"] == "running"


@pytest.mark.parametrize(
    ("states", "code"),
    [([], 0), (["running", "running"], 0), (["running", "stopped"], 3), (["stopped", "stale"], 1),
     (["stale", "hung", "stopped"], 4), (["hung", "stopped"], 4)],
)
def test_the_exit_code_is_that_of_the_worst_state(states, code) -> None:
    rows = [DaemonStatus(name=f"d{i}", instance=0, host="h", state=state) for i, state in enumerate(states)]
    assert worst_exit_code(rows) == code


def test_a_daemon_with_its_pid_file_in_another_run_directory_is_running(project, tmp_path) -> None:
    elsewhere = {"DAEMONS_RUN_DIR": str(tmp_path / "other-run")}
    pid = project.start("counter", env=elsewhere)
    try:
        wait_for(lambda: Heartbeat.objects.filter(name="counter", pid=pid).exists(), message="a first heartbeat")
        code, row = status_json(project, "counter")
        assert (code, row["state"], row["pid"]) == (0, "running", pid)
        assert row["info"].startswith("PID file in another run directory")
        assert project.manage("stopdaemon", "counter", env=elsewhere).returncode == 0
        wait_for(lambda: status_json(project, "counter")[1]["state"] == "stopped", message="stopped for good")
    finally:
        project.manage("stopdaemon", "counter", "--kill", env=elsewhere)


def test_a_running_daemon_is_starting_during_its_first_interval_not_never() -> None:
    from datetime import datetime, timedelta

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    row = DaemonStatus(name="d", instance=0, host="h", state=State.RUNNING, interval=5.0,
                       started_at=now - timedelta(seconds=2))
    assert row.last_tick_label(now) == "starting"
    assert row.last_tick_label(now + timedelta(seconds=10)) == "never"
    assert DaemonStatus(name="d", instance=0, host="h", state=State.STOPPED).last_tick_label(now) == "never"
    row.last_tick_at = now - timedelta(seconds=1)
    assert row.last_tick_label(now) == "1s ago"


@pytest.mark.django_db
def test_json_gives_each_scheduled_jobs_last_run_and_next_run_as_data(settings) -> None:
    from datetime import datetime

    from daemons.console.status import read_status
    from daemons.models import JobRun

    settings.TIME_ZONE = "UTC"
    eight = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    JobRun.objects.create(daemon="digest", job="daily_digest", last_run_at=eight, scheduled_for=eight, attempt=1,
                          last_outcome="error", last_error="SMTPServerDisconnected: gone", runs=1, errors=1,
                          last_duration_ms=12, next_run_at=datetime(2099, 1, 1, 8, 0, tzinfo=UTC))
    row = read_status("digest").as_json()
    assert row["state"] == "stopped" and row["interval"] == 10.0
    assert row["jobs"] == [{
        "name": "daily_digest", "schedule": "cron '0 8 * * *' (UTC)", "runs": 1, "errors": 1,
        "last_run_at": eight.isoformat(), "scheduled_for": eight.isoformat(), "attempt": 1, "last_outcome": "error",
        "last_duration_ms": 12, "last_error": "SMTPServerDisconnected: gone",
        "next_run_at": "2099-01-01T08:00:00+00:00", "retrying": False,
    }]
    assert row["status_text"].startswith("daily_digest: 1 runs, 1 errors, last 2026-11-27 08:00 failed, next 2099")

"""Operator orders kept in the database: pause and resume an instance, run a job now."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from daemons.cluster import control
from daemons.models import Heartbeat, Pause, RunRequest
from tests.conftest import wait_for


@pytest.mark.django_db
def test_pause_and_resume_one_instance() -> None:
    assert control.pause("counter", 1, by="ops") is True
    assert control.pause("counter", 1) is False  # already paused: the first record stays
    assert Pause.objects.get().paused_by == "ops"
    assert control.is_paused("counter", 1) and not control.is_paused("counter", 0)
    assert control.paused() == {("counter", 1)}
    assert control.resume("counter", 1) is True
    assert control.resume("counter", 1) is False
    assert not control.is_paused("counter", 1)


@pytest.mark.django_db
def test_a_run_request_is_claimed_once() -> None:
    assert control.request_run("digest", "daily", by="ops") is True
    assert control.request_run("digest", "daily") is False
    control.request_run("digest", "weekly")
    control.request_run("other", "daily")
    assert control.pending_runs() == {("digest", "daily"), ("digest", "weekly"), ("other", "daily")}
    assert control.claim_run_requests("digest") == {"daily", "weekly"}
    assert control.claim_run_requests("digest") == set()
    assert list(RunRequest.objects.values_list("daemon", "job")) == [("other", "daily")]


@pytest.mark.django_db
def test_database_errors_read_as_no_order() -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE daemons_pause RENAME TO daemons_pause_gone")
        cursor.execute("ALTER TABLE daemons_runrequest RENAME TO daemons_runrequest_gone")
    assert control.is_paused("counter") is False
    assert control.claim_run_requests("digest") == set()


@pytest.mark.process
def test_a_paused_daemon_keeps_its_heartbeat_but_stops_ticking(project, tmp_path) -> None:
    ticks = tmp_path / "ticks"
    project.env["TESTAPP_TICKS_FILE"] = str(ticks)
    project.start("counter")  # ticks every 0.2 s
    wait_for(lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 2, timeout=30, message="two ticks")
    control.pause("counter")
    paused_at = timezone.now()
    count = len(ticks.read_text().splitlines())

    def heartbeat_after(moment: datetime) -> datetime | None:
        beat = Heartbeat.objects.filter(name="counter").first()
        return beat.last_heartbeat if beat and beat.last_heartbeat > moment else None

    # Two heartbeats after the pause (at least a second apart): the daemon is alive, and any tick
    # that had begun before the pause is over.
    first = wait_for(lambda: heartbeat_after(paused_at + timedelta(seconds=0.5)), timeout=30, message="a heartbeat")
    wait_for(lambda: heartbeat_after(first), timeout=30, message="another heartbeat")
    settled = len(ticks.read_text().splitlines())
    assert settled <= count + 1  # at most the tick already running when the pause was written
    checked = timezone.now()
    wait_for(lambda: heartbeat_after(checked), timeout=30, message="a heartbeat while paused")
    assert len(ticks.read_text().splitlines()) == settled
    control.resume("counter")
    wait_for(lambda: len(ticks.read_text().splitlines()) > settled, timeout=30, message="ticks after resuming")


@pytest.mark.process
def test_run_now_runs_a_scheduled_job_at_once(project, settings) -> None:
    from daemons.cluster.wakeup import wake
    from daemons.models import JobRun

    settings.DAEMONS_RUN_DIR = str(project.run_dir)
    project.start("digest")  # its job is due at 08:00 only
    wait_for(lambda: JobRun.objects.filter(daemon="digest", job="daily_digest").exists(), timeout=30,
             message="the digest daemon to load its jobs")
    runs = JobRun.objects.get(daemon="digest", job="daily_digest").runs
    control.request_run("digest", "daily_digest")
    wake("digest")
    wait_for(lambda: JobRun.objects.get(daemon="digest", job="daily_digest").runs == runs + 1, timeout=30,
             message="the requested run")
    assert not RunRequest.objects.exists()

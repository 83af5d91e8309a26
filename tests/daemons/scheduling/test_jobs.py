"""ScheduledDaemon: several jobs per daemon, each with its own guard, counters and catch-up."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from daemons.models import JobRun
from daemons.scheduling.jobs import ScheduledDaemon, job
from daemons.testing import tick_times

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 27, 7, 59, 58, tzinfo=UTC)


class Chores(ScheduledDaemon):
    """Not registered: a daemon made for these tests."""

    name = "chores"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, datetime]] = []
        self.fail_sweep = False

    @job(every="5s")
    def sweep(self, now: datetime) -> int:
        self.calls.append(("sweep", now))
        if self.fail_sweep:
            raise RuntimeError("sweep broke")
        return 2

    @job(cron="0 8 * * *", tz="UTC")
    def report(self, now: datetime) -> int:
        self.calls.append(("report", now))
        return 1

    @job(cron="0 9 * * *", tz="UTC", catch_up=False)
    def tidy(self, now: datetime) -> None:
        self.calls.append(("tidy", now))


def test_jobs_are_collected_in_declaration_order() -> None:
    assert list(Chores.jobs) == ["sweep", "report", "tidy"]
    assert Chores.interval == 1.0


def test_each_job_runs_on_its_own_schedule(daemon_harness) -> None:
    harness = daemon_harness(Chores)
    harness.run_ticks(tick_times(T0, 1, 13))  # 07:59:58 .. 08:00:10
    calls = harness.daemon.calls
    sweeps = [now for kind, now in calls if kind == "sweep"]
    assert sweeps == [T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=10)]
    assert [now for kind, now in calls if kind == "report"] == [datetime(2026, 11, 27, 8, 0, tzinfo=UTC)]
    assert not [c for c in calls if c[0] == "tidy"]
    assert harness.processed == 3 * 2 + 1
    harness.logs.assert_action("job_done", job="report")
    assert len(harness.logs.with_action("job_done", job="sweep")) == 3


def test_idle_ticks_do_nothing_and_return_an_idle_result(daemon_harness) -> None:
    harness = daemon_harness(Chores)
    first, second = harness.run_ticks([T0, T0 + timedelta(seconds=1)])
    assert first.processed == 2 and "sweep" in first.summary
    assert second.idle


def test_an_error_in_one_job_is_logged_counted_and_the_others_still_run(daemon_harness, monkeypatch) -> None:
    captured = []
    monkeypatch.setattr("daemons.reporting.capture", lambda exc, **tags: captured.append((exc, tags)))
    harness = daemon_harness(Chores)
    harness.daemon.fail_sweep = True
    harness.run_ticks(tick_times(T0, 1, 3))  # the sweep fails at 07:59:58, the report runs at 08:00:00
    error = harness.logs.assert_action("job_error", job="sweep")
    assert error.levelname == "ERROR" and error.exc_info[1].args == ("sweep broke",)
    harness.logs.assert_action("job_done", job="report")
    assert [tags for _, tags in captured] == [{"daemon": "chores", "job": "sweep"}]
    row = JobRun.objects.get(daemon="chores", job="sweep")
    assert (row.runs, row.errors, row.last_outcome) == (1, 1, "error")
    assert row.last_error == "RuntimeError: sweep broke"
    # A failed job keeps its schedule: it is due again 5 s after the failed run.
    assert row.next_run_at == T0 + timedelta(seconds=5)


def test_status_reports_each_jobs_counters(daemon_harness, settings) -> None:
    settings.TIME_ZONE = "UTC"
    harness = daemon_harness(Chores)
    assert harness.status_text() == "sweep: never ran; report: never ran; tidy: never ran"
    harness.run_ticks(tick_times(T0, 1, 3))
    # A fresh object (as daemonstatus makes) reads what the running one recorded.
    assert Chores().status() == (
        "sweep: 1 runs, 0 errors, last 2026-11-27 07:59, next 2026-11-27 08:00; "
        "report: 1 runs, 0 errors, last 2026-11-27 08:00, next 2026-11-28 08:00; "
        "tidy: 0 runs, 0 errors, next 2026-11-27 09:00"
    )


def test_a_missed_run_is_caught_up_once_at_startup_unless_the_job_opts_out(daemon_harness) -> None:
    first = daemon_harness(Chores)
    day = datetime(2026, 11, 25, tzinfo=UTC)
    first.run_ticks([day + timedelta(hours=7), day + timedelta(hours=8), day + timedelta(hours=9)])
    assert [kind for kind, _ in first.daemon.calls] == ["sweep", "sweep", "report", "sweep", "tidy"]
    # The daemon was down from the 25th until the 27th at 10:00: report (catch-up) runs once
    # at once; tidy (no catch-up) skips its missed runs and waits for 09:00 tomorrow.
    restart = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    second = daemon_harness(Chores)
    second.run_ticks(tick_times(restart, 1, 3))
    reports = [now for kind, now in second.daemon.calls if kind == "report"]
    assert reports == [restart]
    assert not [c for c in second.daemon.calls if c[0] == "tidy"]
    second.logs.assert_action("job_catch_up", job="report")
    second.logs.assert_action("job_skipped", job="tidy")
    row = JobRun.objects.get(daemon="chores", job="tidy")
    assert row.next_run_at == datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert JobRun.objects.get(daemon="chores", job="report").runs == 2


def test_a_run_longer_than_its_interval_does_not_pile_up(daemon_harness) -> None:
    clock = iter([0.0, 12.0] + [12.0] * 20)
    harness = daemon_harness(Chores)
    harness.daemon.monotonic = lambda: next(clock)
    harness.tick(T0)  # the sweep takes 12 s (by its clock)
    row = JobRun.objects.get(daemon="chores", job="sweep")
    assert row.next_run_at == T0 + timedelta(seconds=15)
    harness.run_ticks([T0 + timedelta(seconds=12), T0 + timedelta(seconds=13)])
    assert len([c for c in harness.daemon.calls if c[0] == "sweep"]) == 1


def test_jitter_delays_interval_runs_without_drift(daemon_harness) -> None:
    class Jittery(ScheduledDaemon):
        name = "jittery"

        @job(every="10s", jitter="3s")
        def ping(self, now: datetime) -> int:
            return 1

    harness = daemon_harness(Jittery, rng=random.Random(3))
    # Even the first run is delayed, so daemons started together spread out.
    assert harness.tick(T0).idle
    for _ in range(5):
        state = harness.daemon.states["ping"]
        assert state.slot <= state.due <= state.slot + timedelta(seconds=3)
        harness.tick(state.due)
    # Five runs later the slot is still on the 10 s grid.
    assert harness.daemon.states["ping"].slot == T0 + timedelta(seconds=50)


def test_a_stop_request_leaves_remaining_jobs_for_later(daemon_harness) -> None:
    harness = daemon_harness(Chores)
    harness.tick(T0)
    harness.stopping = True
    assert harness.tick(T0 + timedelta(seconds=5)).idle


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "exactly one of every= or cron="), ({"every": "5s", "cron": "* * * * *"}, "exactly one"),
     ({"every": "5 parsecs"}, "invalid interval"), ({"cron": "0 25 * * *"}, "invalid cron expression"),
     ({"cron": "0 8 * * *", "jitter": "5s"}, "jitter= applies to every= jobs only"),
     ({"cron": "0 8 * * *", "tz": "Nowhere/Land"}, "unknown time zone")],
)
def test_bad_job_declarations_fail_when_the_class_is_defined(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        job(**kwargs)


def test_a_cron_job_without_tz_uses_the_project_time_zone(settings) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    assert str(Chores.jobs["report"].schedule()) == "cron '0 8 * * *' (UTC)"

    class Local(ScheduledDaemon):
        name = "local"

        @job(cron="0 8 * * *")
        def digest(self, now: datetime) -> int:
            return 0

    assert str(Local.jobs["digest"].schedule()) == "cron '0 8 * * *' (Europe/Berlin)"


class Digest(ScheduledDaemon):
    """Not registered: a daily job whose mail server fails its first `failures` tries."""

    name = "digest_test"

    def __init__(self, *args, failures: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.calls: list[datetime] = []
        self.monotonic = lambda: 0.0  # each run takes no time, so retry times are exact

    @job(cron="0 8 * * *", tz="UTC")
    def daily(self, now: datetime) -> int:
        self.calls.append(now)
        if len(self.calls) <= self.failures:
            raise ConnectionError("mail server blip")
        return 1


EIGHT = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def test_a_failed_run_is_retried_with_backoff_not_at_its_next_time(daemon_harness, monkeypatch) -> None:
    monkeypatch.setattr("daemons.reporting.capture", lambda exc, **tags: None)
    harness = daemon_harness(Digest, failures=2)
    harness.run_ticks(tick_times(EIGHT - timedelta(seconds=1), 1, 40))  # 07:59:59 .. 08:00:38
    assert harness.daemon.calls == [EIGHT, EIGHT + timedelta(seconds=10), EIGHT + timedelta(seconds=30)]
    errors = harness.logs.with_action("job_error", job="daily")
    assert [(r.attempt, r.retry_at) for r in errors] == [
        (1, EIGHT + timedelta(seconds=10)), (2, EIGHT + timedelta(seconds=30))]
    harness.logs.assert_action("job_done", job="daily", attempt=3)
    row = JobRun.objects.get(daemon="digest_test", job="daily")
    assert (row.last_outcome, row.attempt, row.scheduled_for) == ("ok", 3, EIGHT)
    assert (row.runs, row.errors, row.last_error) == (3, 2, "ConnectionError: mail server blip")
    assert row.next_run_at == EIGHT + timedelta(days=1)


def test_each_failed_try_is_recorded_with_its_outcome_and_the_retry(daemon_harness, monkeypatch, settings) -> None:
    settings.TIME_ZONE = "UTC"
    monkeypatch.setattr("daemons.reporting.capture", lambda exc, **tags: None)
    harness = daemon_harness(Digest, failures=5)
    harness.run_ticks([EIGHT - timedelta(seconds=1), EIGHT])
    row = JobRun.objects.get(daemon="digest_test", job="daily")
    assert (row.last_outcome, row.attempt, row.scheduled_for, row.next_run_at) == (
        "error", 1, EIGHT, EIGHT + timedelta(seconds=10))
    assert row.last_error == "ConnectionError: mail server blip" and row.last_error_at is not None
    [shown] = Digest().job_statuses(now=EIGHT + timedelta(seconds=5))
    assert (shown.last_outcome, shown.attempt, shown.next_run_at, shown.retrying) == (
        "error", 1, EIGHT + timedelta(seconds=10), True)
    assert not Digest().job_statuses(now=EIGHT + timedelta(days=1))[0].retrying  # the next run took over
    harness.tick(EIGHT + timedelta(seconds=10))
    row.refresh_from_db()
    assert (row.last_outcome, row.attempt, row.next_run_at) == ("error", 2, EIGHT + timedelta(seconds=30))


def test_a_retry_pending_at_a_restart_runs_once_when_the_daemon_comes_back(daemon_harness, monkeypatch) -> None:
    monkeypatch.setattr("daemons.reporting.capture", lambda exc, **tags: None)
    first = daemon_harness(Digest, failures=1)
    first.run_ticks([EIGHT - timedelta(seconds=1), EIGHT])  # fails; the daemon is stopped before its retry at 08:00:10
    back = EIGHT + timedelta(hours=2)
    second = daemon_harness(Digest)
    second.run_ticks(tick_times(back, 1, 3))
    assert second.daemon.calls == [back]
    second.logs.assert_action("job_retry_resumed", job="daily")
    second.logs.assert_no_action("job_catch_up")
    row = JobRun.objects.get(daemon="digest_test", job="daily")
    assert (row.last_outcome, row.attempt, row.scheduled_for) == ("ok", 2, EIGHT)
    assert row.next_run_at == EIGHT + timedelta(days=1)


def test_a_job_without_retry_waits_for_its_next_time(daemon_harness, monkeypatch) -> None:
    monkeypatch.setattr("daemons.reporting.capture", lambda exc, **tags: None)

    class NoRetry(Digest):
        name = "no_retry"

        @job(cron="0 8 * * *", tz="UTC", retry=None)
        def daily(self, now: datetime) -> int:
            return super().daily(now)

    harness = daemon_harness(NoRetry, failures=1)
    harness.run_ticks([EIGHT - timedelta(seconds=1), *tick_times(EIGHT, 60, 10)])  # 08:00 .. 08:09
    assert harness.daemon.calls == [EIGHT]
    assert JobRun.objects.get(daemon="no_retry", job="daily").next_run_at == EIGHT + timedelta(days=1)

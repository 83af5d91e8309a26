"""Schedules as pure functions of `now`: intervals, cron with time zones and DST, catch-up."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from daemons.scheduling.schedule import (
    Cron,
    Every,
    cron,
    every,
    format_interval,
    jittered,
    missed_run,
    next_run,
    parse_interval,
    startup,
)

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("2m", 120), ("1h", 3600), ("1d", 86400), ("500ms", 0.5), ("1.5m", 90), (" 30 ", 30), (7, 7),
     (0.25, 0.25), (timedelta(minutes=3), 180)],
)
def test_parse_interval_reads_units_numbers_and_timedeltas(text, seconds) -> None:
    assert parse_interval(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "5x", "m5", "-5s", "0s", "five", "5 s s", 0, -1, True, None, timedelta(0)])
def test_parse_interval_refuses_bad_values_with_a_clear_message(bad) -> None:
    with pytest.raises(ValueError, match=r"invalid interval .*"):
        parse_interval(bad)


@pytest.mark.parametrize("seconds", [1, 30, 90, 120, 3600, 5400, 86400, 0.5])
def test_format_interval_round_trips(seconds) -> None:
    period = timedelta(seconds=seconds)
    assert parse_interval(format_interval(period)) == period


def test_cron_refuses_bad_expression_and_zone() -> None:
    with pytest.raises(ValueError, match=r"invalid cron expression '61 \* \* \* \*'"):
        cron("61 * * * *")
    with pytest.raises(ValueError, match="invalid cron expression"):
        cron("* * *")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        cron("0 8 * * *", "Mars/Olympus")


def test_interval_never_run_is_due_now_then_keeps_the_grid() -> None:
    sched = every("5s")
    assert next_run(sched, None, T0) == T0
    # The run took 3 ms: next due 5 s after the slot, not after the end.
    assert next_run(sched, T0, T0 + timedelta(milliseconds=3)) == T0 + timedelta(seconds=5)


def test_interval_run_that_overran_skips_the_slots_it_covered() -> None:
    sched = every("5s")
    # A run due at T0 finished at T0+12s: 5 s and 10 s are skipped, not run back to back.
    assert next_run(sched, T0, T0 + timedelta(seconds=12)) == T0 + timedelta(seconds=15)
    # Finishing exactly on a slot skips that slot too: it is no longer strictly ahead.
    assert next_run(sched, T0, T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=15)


def test_interval_jitter_delays_within_bounds_and_is_reproducible() -> None:
    sched = every("1m", jitter="10s")
    dues = [jittered(sched, next_run(sched, T0, T0), random.Random(seed)) for seed in range(50)]
    assert all(T0 + timedelta(minutes=1) <= due <= T0 + timedelta(minutes=1, seconds=10) for due in dues)
    assert len(set(dues)) > 40
    assert jittered(sched, T0, random.Random(7)) == jittered(sched, T0, random.Random(7))
    assert jittered(cron("0 8 * * *"), T0, random.Random(7)) == T0  # cron jobs are never jittered
    assert str(sched) == "every 1m (jitter 10s)"


def test_cron_next_run_in_utc() -> None:
    sched = cron("*/5 * * * *")
    assert next_run(sched, None, T0) == T0 + timedelta(minutes=5)
    assert next_run(sched, T0, T0 + timedelta(seconds=1)) == T0 + timedelta(minutes=5)
    # A run that overran two slots: the next time after it finished, not the ones it covered.
    assert next_run(sched, T0, T0 + timedelta(minutes=11)) == T0 + timedelta(minutes=15)


def test_cron_daily_at_eight_follows_the_wall_clock_across_dst() -> None:
    sched = cron("0 8 * * *", "Europe/Berlin")
    # Spring forward on 2026-03-29: 08:00 is 07:00 UTC before and 06:00 UTC after.
    before = datetime(2026, 3, 28, 8, 0, tzinfo=BERLIN)
    after = next_run(sched, before, before)
    assert after == datetime(2026, 3, 29, 8, 0, tzinfo=BERLIN)
    assert after.astimezone(UTC) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=23)
    # Fall back on 2026-10-25: that day has 25 hours.
    before = datetime(2026, 10, 24, 8, 0, tzinfo=BERLIN)
    after = next_run(sched, before, before)
    assert after.astimezone(UTC) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=25)


def test_cron_time_in_the_spring_gap_runs_once_right_after_it() -> None:
    sched = cron("30 2 * * *", "Europe/Berlin")
    start = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    due = next_run(sched, None, start)
    # 02:30 does not exist on 2026-03-29: it runs at 03:00 CEST (01:00 UTC).
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    following = next_run(sched, due, due)
    assert following.astimezone(UTC) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_cron_time_repeated_in_autumn_runs_once() -> None:
    sched = cron("30 2 * * *", "Europe/Berlin")
    start = datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN)
    first = next_run(sched, None, start)
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): only the first runs.
    assert first.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = next_run(sched, first, first + timedelta(seconds=1))
    assert second.astimezone(UTC) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    # A daemon that starts inside the repeated hour has missed nothing new.
    inside = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)
    assert missed_run(sched, first, inside) is None


def test_missed_run_for_cron_and_interval() -> None:
    daily = cron("0 8 * * *", "Europe/Berlin")
    ran = datetime(2026, 11, 25, 8, 0, tzinfo=BERLIN)
    assert missed_run(daily, ran, datetime(2026, 11, 26, 7, 59, tzinfo=BERLIN)) is None
    assert missed_run(daily, ran, datetime(2026, 11, 26, 8, 0, tzinfo=BERLIN)) == datetime(2026, 11, 26, 8, 0,
                                                                                         tzinfo=BERLIN)
    # Down for three days: the latest missed time is named, once.
    assert missed_run(daily, ran, datetime(2026, 11, 28, 9, 0, tzinfo=BERLIN)) == datetime(2026, 11, 28, 8, 0,
                                                                                         tzinfo=BERLIN)
    hourly = every("1h")
    assert missed_run(hourly, T0, T0 + timedelta(minutes=59)) is None
    assert missed_run(hourly, T0, T0 + timedelta(hours=3, minutes=5)) == T0 + timedelta(hours=3)
    assert missed_run(hourly, None, T0) is None


def test_startup_catches_up_once_when_asked_and_skips_otherwise() -> None:
    daily = cron("0 8 * * *", "Europe/Berlin")
    ran = datetime(2026, 11, 24, 8, 0, tzinfo=BERLIN)
    now = datetime(2026, 11, 27, 10, 0, tzinfo=BERLIN)
    caught = startup(daily, ran, now, catch_up=True)
    assert caught.action == "catch_up" and caught.due == now
    assert caught.missed == datetime(2026, 11, 27, 8, 0, tzinfo=BERLIN)
    # After the catch-up run the job is back on its schedule, with no second catch-up.
    assert next_run(daily, caught.due, now) == datetime(2026, 11, 28, 8, 0, tzinfo=BERLIN)
    skipped = startup(daily, ran, now, catch_up=False)
    assert skipped.action == "skip" and skipped.due == datetime(2026, 11, 28, 8, 0, tzinfo=BERLIN)
    on_time = startup(daily, datetime(2026, 11, 27, 8, 0, tzinfo=BERLIN), now, catch_up=True)
    assert on_time.action == "on_time" and on_time.due == datetime(2026, 11, 28, 8, 0, tzinfo=BERLIN)
    never = startup(daily, None, now, catch_up=True)
    assert never.action == "on_time" and never.due == datetime(2026, 11, 28, 8, 0, tzinfo=BERLIN)


def test_startup_for_interval_jobs() -> None:
    hourly = every("1h")
    assert startup(hourly, None, T0, catch_up=False).due == T0
    late = T0 + timedelta(hours=2, minutes=30)
    assert startup(hourly, T0, late, catch_up=True).due == late
    skipped = startup(hourly, T0, late, catch_up=False)
    assert skipped.action == "skip" and skipped.due == T0 + timedelta(hours=3)


def test_schedules_describe_themselves() -> None:
    assert str(every(90)) == "every 90s"
    assert str(cron("0 8 * * *", "Europe/Berlin")) == "cron '0 8 * * *' (Europe/Berlin)"
    assert isinstance(every("2m"), Every) and isinstance(cron("0 0 * * *"), Cron)


def test_retry_delays_double_up_to_the_cap_and_never_reach_the_next_scheduled_time() -> None:
    from daemons.scheduling.schedule import RETRY_MAX_DELAY, retry_at

    tomorrow = T0 + timedelta(days=1)
    retries = [retry_at(T0, attempt, timedelta(seconds=10), tomorrow) for attempt in range(1, 10)]
    delays = [at - T0 for at in retries if at is not None]
    assert len(delays) == len(retries)
    assert delays[:4] == [timedelta(seconds=s) for s in (10, 20, 40, 80)]
    assert delays[-1] == RETRY_MAX_DELAY == timedelta(minutes=15)
    assert retry_at(T0, 10_000, timedelta(seconds=10), tomorrow) == T0 + RETRY_MAX_DELAY
    # The next scheduled run comes first: it takes over, so no retry.
    assert retry_at(T0, 1, timedelta(seconds=10), T0 + timedelta(seconds=5)) is None
    assert retry_at(T0, 1, timedelta(seconds=10), T0 + timedelta(seconds=10)) is None


def test_a_recorded_retry_is_kept_until_the_next_scheduled_time() -> None:
    from daemons.scheduling.schedule import pending_retry

    daily = cron("0 8 * * *", "UTC")
    failed = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    retry = failed + timedelta(seconds=10)
    assert pending_retry(daily, failed, retry, failed + timedelta(seconds=1)) == retry
    assert pending_retry(daily, failed, retry, failed + timedelta(hours=3)) == failed + timedelta(hours=3)
    assert pending_retry(daily, failed, retry, failed + timedelta(days=1)) is None
    assert pending_retry(daily, failed, failed + timedelta(days=1), failed + timedelta(hours=1)) is None
    assert pending_retry(daily, None, retry, failed) is None

"""Interval and cron schedules, and when a job is next due: pure functions of `now`."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from daemons.process.backoff import backoff

# A failed run is retried after its retry delay, doubled on each further failure up to this.
RETRY_MAX_DELAY = timedelta(minutes=15)

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_interval(value: str | timedelta | float | int) -> timedelta:
    """Read an interval: "500ms", "5s", "2m", "1h", "1d", a bare number of seconds, or a timedelta.

    Raises ValueError with a message naming the bad value; a zero or negative interval
    is refused, because a schedule that is always due would run its job on every tick.
    """
    if isinstance(value, timedelta):
        period = value
    elif isinstance(value, bool):
        raise ValueError(f"invalid interval {value!r}: expected e.g. '30s', '5m', '1h'")
    elif isinstance(value, (int, float)):
        period = timedelta(seconds=value)
    elif isinstance(value, str):
        match = _INTERVAL_RE.match(value)
        if not match:
            raise ValueError(f"invalid interval {value!r}: expected a number with a unit, e.g. '30s', '5m', '1h'")
        number, unit = match.groups()
        period = timedelta(seconds=float(number) * _UNITS[unit or "s"])
    else:
        raise ValueError(f"invalid interval {value!r}: expected e.g. '30s', '5m', '1h'")
    if period <= timedelta(0):
        raise ValueError(f"invalid interval {value!r}: it must be longer than zero")
    return period


def format_duration(seconds: float | None) -> str:
    """A duration as the status tables show it: "42s", "3m07s", "2h05m", "1d04h"; "-" for None."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_interval(period: timedelta) -> str:
    """The shortest exact spelling of `period` that `parse_interval` reads back ("90s", "2m")."""
    seconds = period.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Every:
    """Run every `period`, each run delayed by a random amount up to `jitter`."""

    period: timedelta
    jitter: timedelta = timedelta(0)

    def __str__(self) -> str:
        text = f"every {format_interval(self.period)}"
        return f"{text} (jitter {format_interval(self.jitter)})" if self.jitter else text


@dataclass(frozen=True)
class Cron:
    """Run at the times a 5-field (or 6-field, with seconds) cron expression names, in `tz`.

    Times are matched on the wall clock of `tz`, as Debian's cron does across daylight
    saving changes: a time skipped in spring runs at the first minute after the gap, and a
    time repeated in autumn runs once.
    """

    expression: str
    tz: str = "UTC"

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def after(self, moment: datetime) -> datetime:
        """The first time strictly after `moment`, in `tz`."""
        return next(CronSim(self.expression, moment.astimezone(self.zone)))

    def at_or_before(self, moment: datetime) -> datetime | None:
        """The latest time at or before `moment`, or None if there is none within 50 years."""
        start = moment.astimezone(self.zone).replace(microsecond=0) + timedelta(seconds=1)
        try:
            return next(CronSim(self.expression, start, reverse=True))
        except StopIteration:
            return None


Schedule = Every | Cron


def every(period: str | timedelta | float | int, *, jitter: str | timedelta | float | int | None = None) -> Every:
    """An interval schedule; ValueError for an unreadable period or jitter."""
    spread = parse_interval(jitter) if jitter else timedelta(0)
    return Every(parse_interval(period), spread)


def cron(expression: str, tz: str = "UTC") -> Cron:
    """A cron schedule; ValueError with a clear message for a bad expression or time zone."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=ZoneInfo(tz)))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None
    return Cron(expression.strip(), tz)


def next_run(schedule: Schedule, last_run: datetime | None, now: datetime) -> datetime:
    """When a job is next due, strictly after `now` unless it never ran.

    `last_run` is when the previous run was due (None: never). A time that passed while
    the previous run was still going, or while the daemon was down, is skipped rather
    than run late: a job never runs twice back to back to catch up, and never overlaps
    itself. An interval job that never ran is due at once; a cron job that never ran
    waits for its next time. Interval runs keep to the grid `last_run + k * period`, so
    jitter (`jittered`, applied to the time this returns) and slow runs don't make the schedule drift.
    """
    if isinstance(schedule, Cron):
        return schedule.after(now if last_run is None else max(last_run, now))
    if last_run is None:
        return now
    period = schedule.period
    slot = last_run + period
    if slot <= now:
        slot += period * ((now - slot) // period + 1)
    return slot


def jittered(schedule: Schedule, slot: datetime, rng: random.Random) -> datetime:
    """When the run scheduled for `slot` starts: delayed by a random amount up to an interval schedule's jitter."""
    if isinstance(schedule, Every) and schedule.jitter:
        return slot + timedelta(seconds=rng.uniform(0, schedule.jitter.total_seconds()))
    return slot


def missed_run(schedule: Schedule, last_run: datetime | None, now: datetime) -> datetime | None:
    """The latest time in (`last_run`, `now`] at which the job should have run, or None.

    A job that never ran has missed nothing.
    """
    if last_run is None:
        return None
    if isinstance(schedule, Cron):
        latest = schedule.at_or_before(now)
        return latest if latest is not None and latest > last_run else None
    slot = last_run + schedule.period
    if slot > now:
        return None
    return slot + schedule.period * ((now - slot) // schedule.period)


@dataclass(frozen=True)
class StartupDecision:
    """What a job does when its daemon starts: when it is first due, and why."""

    due: datetime
    missed: datetime | None
    catch_up: bool

    @property
    def action(self) -> str:
        """"catch_up" (run now for a missed time), "skip" (a missed time is dropped) or "on_time"."""
        if self.missed is None:
            return "on_time"
        return "catch_up" if self.catch_up else "skip"


def startup(schedule: Schedule, last_run: datetime | None, now: datetime, *, catch_up: bool) -> StartupDecision:
    """Decide a job's first due time when its daemon starts at `now`.

    A time missed while the daemon was down is run once, at once, when the job asks for
    catch-up; otherwise it is skipped and the job waits for its next time. However many
    times were missed, catch-up runs the job once.
    """
    missed = missed_run(schedule, last_run, now)
    if missed is not None and catch_up:
        return StartupDecision(due=now, missed=missed, catch_up=True)
    return StartupDecision(due=next_run(schedule, last_run, now), missed=missed, catch_up=False)


def following(schedule: Schedule, slot: datetime) -> datetime:
    """The scheduled time that comes after `slot`, without jitter."""
    if isinstance(schedule, Cron):
        return schedule.after(slot)
    return slot + schedule.period


def retry_at(failed_at: datetime, attempt: int, delay: timedelta, upcoming: datetime) -> datetime | None:
    """When a run that failed at `failed_at` on its `attempt`-th try (1 = the first) is tried again.

    The delay doubles with each failed try of the same scheduled run (`delay`, 2 x `delay`,
    4 x `delay` ...) up to RETRY_MAX_DELAY. None when the job's `upcoming` scheduled time
    comes first: that run takes over, so a job never runs twice back to back.
    """
    wait = backoff(attempt, base=delay.total_seconds(), cap=RETRY_MAX_DELAY.total_seconds())
    moment = failed_at + timedelta(seconds=wait)
    return moment if moment < upcoming else None


def pending_retry(schedule: Schedule, failed_slot: datetime | None, retry: datetime | None,
                  now: datetime) -> datetime | None:
    """When a retry recorded before a restart is due, or None if there is none to keep.

    `failed_slot` is the scheduled time whose run failed and `retry` when it was to be
    tried again. The retry is kept while that scheduled time is still the latest one
    (it runs at once if its time passed while the daemon was down); after that the
    missed run is the startup rule's business.
    """
    if failed_slot is None or retry is None:
        return None
    upcoming = following(schedule, failed_slot)
    if retry >= upcoming or now >= upcoming:
        return None
    return max(now, retry)

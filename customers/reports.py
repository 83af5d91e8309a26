"""Reads for the operator's dashboard: activity per hour and the daemons' heartbeats."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncHour

from daemons.heartbeat import instance_state
from daemons.models import Heartbeat

from .models import Customer, OnboardingState


@dataclass(frozen=True)
class HourActivity:
    start: datetime  # UTC, on the hour
    signups: int
    onboardings: int


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def activity_per_hour(*, now: datetime, hours: int = 24) -> list[HourActivity]:
    """Signups and onboardings in each of the last `hours` hours, oldest first.

    The last bucket is the hour `now` falls in (so far). Hours are UTC, so a local
    time zone with a half-hour offset can't split a bucket. Two grouped queries.
    """
    last = hour_floor(now)
    first = last - timedelta(hours=hours - 1)

    def counts(field: str) -> dict[datetime, int]:
        rows = (
            Customer.objects.filter(**{f"{field}__gte": first, f"{field}__lte": now})
            .annotate(hour=TruncHour(field, tzinfo=UTC))
            .values("hour")
            .annotate(n=Count("id"))
            .order_by()
        )
        return {hour_floor(row["hour"]): row["n"] for row in rows}

    signups = counts("created_at")
    onboardings = counts("onboarded_at")
    starts = [first + timedelta(hours=offset) for offset in range(hours)]
    return [HourActivity(start, signups.get(start, 0), onboardings.get(start, 0)) for start in starts]


@dataclass(frozen=True)
class Backlog:
    waiting: int
    retrying: int
    failed: int


def onboarding_backlog() -> Backlog:
    """Customers not yet onboarded: never tried, between retries, and given up on. One query."""
    counts = Customer.objects.onboarding_counts()
    return Backlog(waiting=counts[OnboardingState.WAITING], retrying=counts[OnboardingState.RETRYING],
                   failed=counts[OnboardingState.FAILED])


@dataclass(frozen=True)
class DaemonHealth:
    name: str
    instance: int
    host: str
    pid: int
    state: str  # "running", "dead" or "stopped"
    last_heartbeat: datetime
    heartbeat_age: timedelta
    last_outcome: str
    processed: int
    errors: int
    last_error: str
    status_text: str


def daemons_health(*, now: datetime) -> list[DaemonHealth]:
    """One row per daemon instance and host that ever wrote a heartbeat, by name.

    The state follows the cluster's one rule, `daemons.heartbeat.instance_state`: stopped,
    dead (no heartbeat for three heartbeat periods), or running.
    """
    rows = []
    for beat in Heartbeat.objects.order_by("name", "instance", "host"):
        age = now - beat.last_heartbeat
        state = instance_state(name=beat.name, stopped_at=beat.stopped_at, last_heartbeat=beat.last_heartbeat,
                               now=now)
        rows.append(
            DaemonHealth(
                name=beat.name,
                instance=beat.instance,
                host=beat.host,
                pid=beat.pid,
                state=state,
                last_heartbeat=beat.last_heartbeat,
                heartbeat_age=age,
                last_outcome=beat.last_outcome,
                processed=beat.processed,
                errors=beat.errors,
                last_error=beat.last_error,
                status_text=beat.status_text,
            )
        )
    return rows

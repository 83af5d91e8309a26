"""Reads for the operator's dashboard: activity per hour and the onboarding backlog.

The daemons' own rows are read by `daemons.cluster.instances.cluster_instances`, in the database's time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncHour

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

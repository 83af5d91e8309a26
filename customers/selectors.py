"""Reads about customers and their onboarding."""
from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet

from .models import Customer


def customers_due(*, now: datetime) -> QuerySet[Customer]:
    """Customers not yet onboarded, not failed, and not waiting for a retry after `now`."""
    return Customer.objects.filter(onboarded_at__isnull=True, failed_at__isnull=True).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def customers_waiting_count() -> int:
    return Customer.objects.filter(onboarded_at__isnull=True, failed_at__isnull=True).count()


def customers_failed_count() -> int:
    return Customer.objects.filter(failed_at__isnull=False).count()

"""Reads about customers and their onboarding."""
from __future__ import annotations

from django.utils.text import Truncator

from .models import Customer, OnboardingState


def onboarding_status_line() -> str:
    """The onboarding backlog in one line, e.g. "12 waiting, 3 retrying, 1 failed" (one query).

    Retrying is named only when some are, so the usual line stays short. Customers that
    need attention are named with the latest one's reason (a second query, only then):
    "..., 1 needs attention (customer 7: 3 send(s) with an unknown outcome ...)".
    """
    counts = Customer.objects.onboarding_counts()
    parts = [f"{counts[OnboardingState.WAITING]} waiting"]
    if counts[OnboardingState.RETRYING]:
        parts.append(f"{counts[OnboardingState.RETRYING]} retrying")
    parts.append(f"{counts[OnboardingState.FAILED]} failed")
    if attention := counts[OnboardingState.ATTENTION]:
        latest = Customer.objects.needing_attention().order_by("-attention_at", "-id").first()
        reason = f" (customer {latest.pk}: {Truncator(latest.attention_reason).chars(160)})" if latest else ""
        parts.append(f"{attention} need{'s' if attention == 1 else ''} attention{reason}")
    return ", ".join(parts)

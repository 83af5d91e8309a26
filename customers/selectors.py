"""Reads about customers and their onboarding."""
from __future__ import annotations

from .models import Customer, OnboardingState


def onboarding_status_line() -> str:
    """The onboarding backlog in one line, e.g. "12 waiting, 3 retrying, 1 failed" (one query).

    Retrying is named only when some are, so the usual line stays short.
    """
    counts = Customer.objects.onboarding_counts()
    parts = [f"{counts[OnboardingState.WAITING]} waiting"]
    if counts[OnboardingState.RETRYING]:
        parts.append(f"{counts[OnboardingState.RETRYING]} retrying")
    parts.append(f"{counts[OnboardingState.FAILED]} failed")
    return ", ".join(parts)

"""System checks for the showcase's own settings: what would make onboarding break its promise."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

POSITIVE_SETTINGS = (
    "ONBOARDING_INTERVAL_SECONDS", "ONBOARDING_BATCH_SIZE", "ONBOARDING_MAX_ATTEMPTS", "ONBOARDING_LEASE_SECONDS",
    "ONBOARDING_BREAKER_THRESHOLD", "ONBOARDING_RETRY_BASE_SECONDS", "ONBOARDING_RETRY_MAX_SECONDS",
    "ONBOARDING_SEND_DEADLINE_SECONDS", "ONBOARDING_SMTP_TIMEOUT_SECONDS",
)


@register()
def check_onboarding_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Every ONBOARDING_* number is positive, and a lease outlasts what may happen between renewals.

    The daemon renews its claims when a third of the lease has passed, checked between
    emails; one email may take the whole send deadline. So a lease of at least three
    deadlines is never outlived by a live claim.
    """
    errors: list[CheckMessage] = []
    for name in POSITIVE_SETTINGS:
        value = getattr(settings, name)
        if not (isinstance(value, (int, float)) and value > 0):
            errors.append(Error(f"{name} must be greater than 0, got {value!r}", id="customers.E001"))
    if errors:
        return errors
    lease, deadline = settings.ONBOARDING_LEASE_SECONDS, settings.ONBOARDING_SEND_DEADLINE_SECONDS
    if lease < 3 * deadline:
        errors.append(Error(
            f"ONBOARDING_LEASE_SECONDS ({lease:g}) must be at least three times ONBOARDING_SEND_DEADLINE_SECONDS "
            f"({deadline:g}), or a slow email could outlive its claim", id="customers.E002"))
    if settings.ONBOARDING_SMTP_TIMEOUT_SECONDS > deadline:
        errors.append(Error(
            f"ONBOARDING_SMTP_TIMEOUT_SECONDS ({settings.ONBOARDING_SMTP_TIMEOUT_SECONDS:g}) must not exceed "
            f"ONBOARDING_SEND_DEADLINE_SECONDS ({deadline:g})", id="customers.E003"))
    return errors

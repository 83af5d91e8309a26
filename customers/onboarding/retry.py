"""When to try again: the customers' backoff, and the mail server's after an outage."""
from __future__ import annotations

import random
from datetime import timedelta

from django.conf import settings


def retry_delay(
    attempts: int, *, base: float | None = None, cap: float | None = None, rng: random.Random | None = None
) -> timedelta:
    """Exponential backoff with jitter, after the `attempts`-th failed attempt.

    The ceiling is base * 2^(attempts-1), capped at `cap`; the delay is drawn uniformly
    from the upper half of it, so retries of many customers spread out but the wait
    still grows with each attempt. `base` and `cap` default to the settings
    ONBOARDING_RETRY_BASE_SECONDS and ONBOARDING_RETRY_MAX_SECONDS.
    """
    base = settings.ONBOARDING_RETRY_BASE_SECONDS if base is None else base
    cap = settings.ONBOARDING_RETRY_MAX_SECONDS if cap is None else cap
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


# A mail outage is retried with backoff up to this many seconds.
MAIL_OUTAGE_BACKOFF_CAP = 300.0


def mail_outage_delay(failures: int) -> float:
    """Seconds to wait before trying a mail server again after `failures` failed tries in a row.

    The customers' retry backoff, capped at MAIL_OUTAGE_BACKOFF_CAP: a server that is
    back is found within minutes, and one that isn't is not hammered.
    """
    cap = min(settings.ONBOARDING_RETRY_MAX_SECONDS, MAIL_OUTAGE_BACKOFF_CAP)
    return retry_delay(failures, cap=cap).total_seconds()

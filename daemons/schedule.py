"""`daemons.scheduling.schedule` under its earlier name, kept so that imports of `daemons.schedule` keep working."""
from __future__ import annotations

from daemons.scheduling.schedule import (
    RETRY_MAX_DELAY,
    Cron,
    Every,
    Schedule,
    StartupDecision,
    cron,
    every,
    following,
    format_duration,
    format_interval,
    jittered,
    missed_run,
    next_run,
    parse_interval,
    pending_retry,
    retry_at,
    startup,
)

__all__ = [
    "Cron", "cron", "every", "Every", "following", "format_duration", "format_interval", "jittered",
    "missed_run", "next_run", "parse_interval", "pending_retry", "retry_at", "RETRY_MAX_DELAY", "Schedule",
    "startup", "StartupDecision",
]

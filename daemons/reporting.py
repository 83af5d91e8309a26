"""`daemons.process.reporting` under its earlier name, kept so that imports of `daemons.reporting` keep working."""
from __future__ import annotations

from daemons.process.reporting import (
    EMAIL_PATTERN,
    REDACTED,
    before_send,
    capture,
    flush,
    init_sentry,
    scrub,
)

__all__ = [
    "before_send", "capture", "EMAIL_PATTERN", "flush", "init_sentry", "REDACTED", "scrub",
]

"""`daemons.daemon` under its earlier name, kept so that imports of `daemons.base` keep working."""
from __future__ import annotations

from daemons.daemon import (
    Control,
    Daemon,
    StopEvent,
    TickResult,
    logger_name,
)

__all__ = [
    "Control", "Daemon", "logger_name", "StopEvent", "TickResult",
]

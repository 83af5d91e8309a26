"""`daemons.scheduling.jobs` under its earlier name, kept so that imports of `daemons.jobs` keep working."""
from __future__ import annotations

from daemons.scheduling.jobs import (
    JobMethod,
    JobMethodT,
    JobSpec,
    JobState,
    JobStatus,
    ScheduledDaemon,
    job,
)

__all__ = [
    "job", "JobMethod", "JobMethodT", "JobSpec", "JobState", "JobStatus", "ScheduledDaemon",
]

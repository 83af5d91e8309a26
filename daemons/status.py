"""Read PID files, /proc and heartbeat rows into one `DaemonStatus` per daemon instance."""
from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from . import pidfile, registry
from .heartbeat import heartbeat_overdue
from .paths import RunPaths

# LSB exit codes for a status action.
EXIT_RUNNING = 0
EXIT_STALE = 1
EXIT_STOPPED = 3
EXIT_UNKNOWN = 4  # running but hung: LSB's "status unknown"


@dataclass
class DaemonStatus:
    name: str
    instance: int
    host: str
    state: str  # running | hung | stopped | stale
    pid: int | None = None
    started_at: datetime | None = None
    uptime_seconds: float | None = None
    rss_kib: int | None = None
    last_tick_at: datetime | None = None
    last_heartbeat: datetime | None = None
    processed: int = 0
    errors: int = 0
    last_error: str = ""
    info: str = ""

    @property
    def exit_code(self) -> int:
        return {"running": EXIT_RUNNING, "stale": EXIT_STALE, "hung": EXIT_UNKNOWN}.get(self.state, EXIT_STOPPED)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("started_at", "last_tick_at", "last_heartbeat"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data


def proc_rss_kib(pid: int) -> int | None:
    """Resident memory of `pid` in KiB, from /proc; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_started_at(pid: int) -> datetime | None:
    """When `pid` started, from /proc/<pid>/stat and the boot time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(boot + start_ticks / os.sysconf("SC_CLK_TCK"), tz=dt_timezone.utc)


def read_status(name: str, instance: int = 0) -> DaemonStatus:
    """The status of daemon `name` (instance `instance`) on this host.

    The state comes from the PID lock, never from `kill -0`: a reused PID in a stale
    file reads as `stale`. Counters and tick times come from the heartbeat row. A daemon
    that holds its lock but whose heartbeat is older than three heartbeat periods (three
    intervals, between 1 and 30 s each) reads as `hung`.
    """
    from .models import Heartbeat

    daemon_cls = registry.get(name)
    host = socket.gethostname()
    pid_state = pidfile.inspect(RunPaths.for_daemon(name, instance).pid)
    status = DaemonStatus(name=name, instance=instance, host=host, state=pid_state.state, pid=pid_state.pid)
    if status.state == "running" and status.pid:
        status.rss_kib = proc_rss_kib(status.pid)
        status.started_at = proc_started_at(status.pid)
        if status.started_at:
            status.uptime_seconds = (timezone.now() - status.started_at).total_seconds()
    try:
        beat = Heartbeat.objects.filter(name=name, instance=instance, host=host).first()
        if beat is not None:
            status.last_tick_at = beat.last_tick_at
            status.last_heartbeat = beat.last_heartbeat
            status.processed = beat.processed
            status.errors = beat.errors
            status.last_error = beat.last_error
            if status.started_at is None and status.state == "running":
                status.started_at = beat.started_at
            if status.state == "running" and beat.pid == status.pid:
                if heartbeat_overdue(name, timezone.now() - beat.last_heartbeat):
                    status.state = "hung"
        status.info = daemon_cls().status()
    except DatabaseError as exc:
        status.info = f"database error: {exc}"
    return status


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"

"""Heartbeat policy in one place: how often a daemon writes its row, what it writes, when it is overdue."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from . import registry

# Heartbeats are written at least this often, even while a long tick runs.
HEARTBEAT_MAX_AGE = 30.0
# A running daemon whose heartbeat is older than this many heartbeat periods is hung.
HUNG_AFTER_PERIODS = 3


def heartbeat_period(interval: float) -> float:
    """How often a daemon with `interval` writes its heartbeat: each tick, within 1..30 s."""
    return min(max(interval, 1.0), HEARTBEAT_MAX_AGE)


def heartbeat_overdue(name: str, age: timedelta) -> bool:
    """True if a heartbeat `age` old means daemon `name` is no longer making progress.

    Daemons write at least once per heartbeat period (their interval, within 1 to 30 s),
    between ticks and, during a tick, as long as the tick reports progress. Three periods
    without one means hung (a tick without progress past its limit), crashed or cut off.
    An unknown daemon (one registered only on another host) gets the longest period.
    """
    try:
        interval = registry.get(name).interval_seconds()
    except registry.UnknownDaemon:
        interval = HEARTBEAT_MAX_AGE
    return age.total_seconds() > HUNG_AFTER_PERIODS * heartbeat_period(interval)


@dataclass
class Counters:
    """What a daemon's heartbeat row says about its ticks."""

    ticks: int = 0
    processed: int = 0
    errors: int = 0
    last_tick_at: datetime | None = None
    last_outcome: str = ""
    last_duration_ms: int | None = None
    last_error: str = ""


def key(name: str, instance: int) -> dict[str, Any]:
    """The heartbeat row of daemon `name`, instance `instance`, on this host."""
    return {"name": name, "instance": instance, "host": socket.gethostname()}


def write(name: str, instance: int, *, counters: Counters, started_at: datetime, status_text: str,
          stopped: bool = False) -> None:
    """Write this process's heartbeat row with `counters`; raises DatabaseError."""
    from .models import Heartbeat

    now = timezone.now()
    Heartbeat.objects.update_or_create(
        **key(name, instance),
        defaults={
            "pid": os.getpid(),
            "started_at": started_at,
            "last_heartbeat": now,
            "last_tick_at": counters.last_tick_at,
            "last_outcome": counters.last_outcome,
            "last_duration_ms": counters.last_duration_ms,
            "processed": counters.processed,
            "errors": counters.errors,
            "last_error": counters.last_error,
            "status_text": status_text[:500],
            "stopped_at": now if stopped else None,
        },
    )


def write_busy(name: str, instance: int, *, processed: int) -> None:
    """Mid-tick: say the tick is alive and making progress, with the units done so far; raises DatabaseError."""
    from .models import Heartbeat

    Heartbeat.objects.filter(**key(name, instance)).update(
        last_heartbeat=timezone.now(), last_outcome="busy", processed=processed
    )


def live_duplicate(name: str, instance: int) -> int | None:
    """The PID of another live process on this host that runs daemon `name`/`instance`, or None.

    Read from a fresh heartbeat row, so it finds a twin whose PID file is in another run
    directory. A row that is stopped, overdue or ours is no twin; nor is a PID that is
    dead, a zombie, or a newer process that reused the number (it started after the row).
    """
    from .models import Heartbeat
    from .status import proc_started_at

    beat = Heartbeat.objects.filter(**key(name, instance), stopped_at__isnull=True).first()
    if beat is None or beat.pid == os.getpid() or heartbeat_overdue(name, timezone.now() - beat.last_heartbeat):
        return None
    started = proc_started_at(beat.pid)
    if started is None or started > beat.started_at + timedelta(seconds=2) or _is_zombie(beat.pid):
        return None
    return beat.pid


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True

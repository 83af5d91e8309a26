"""What /proc says of a process: its start time, whether it is a zombie, its memory. Readable for every user."""
from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_since_boot(pid: int) -> float | None:
    """Seconds from boot to the start of process `pid`; None if gone."""
    fields = _stat_fields(pid)
    try:
        return None if fields is None else int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError):
        return None


def boot_time() -> float:
    """The wall-clock time of boot, to the precision of the clocks (not /proc/stat's whole second)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> datetime | None:
    """When `pid` started, as a wall-clock time; None if it is gone."""
    since_boot = started_since_boot(pid)
    if since_boot is None:
        return None
    return datetime.fromtimestamp(boot_time() + since_boot, tz=UTC)


def is_zombie(pid: int) -> bool:
    """True if `pid` has exited and waits to be reaped, or is gone."""
    fields = _stat_fields(pid)
    return fields is None or not fields or fields[0] in ("Z", "X")


def rss_kib(pid: int) -> int | None:
    """Resident memory of `pid` in KiB; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None

"""Giving the memory a burst of work freed back to the operating system.

A daemon's work comes in bursts (a backlog, a report) between long idle stretches. What a
burst frees stays in the process: SQLite keeps the pages it read in its cache, and glibc's
malloc keeps freed blocks for later unless they sit at the very top of its heap. Both are
handed back after work, so an idle daemon weighs what it needs rather than what its biggest
burst needed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress

from django.db import connections

# At most one release in this many seconds: a steady trickle of work (a tick per signup) pays
# for one, not one per tick, and the memory still goes back within this long of the work.
RELEASE_PERIOD = 5.0


def memory_release() -> None:
    """Drop this thread's SQLite connections' page caches, then return malloc's free pages to the system."""
    for conn in connections.all(initialized_only=True):
        if conn.vendor == "sqlite" and conn.connection is not None:
            import sqlite3  # loaded already by the connection

            with suppress(sqlite3.Error):
                conn.connection.execute("PRAGMA shrink_memory")
    if _trim is not None:
        _trim(0)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS) or ctypes is missing."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None


# Looked up on import, which is before `--user` drops privileges: afterwards the interpreter's own
# library may be out of reach. It costs ctypes' 0.4 MiB, which the first release more than gives back.
_trim = _malloc_trim()


class MemoryReleaser:
    """Calls `release` after ticks that did work: as soon as the work is done, then at most once a `period`.

    Work done within a period of the last release is released by the first tick, busy or idle,
    that ends after the period.
    """

    def __init__(self, release: Callable[[], None] = memory_release, *, period: float = RELEASE_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.release = release
        self.period = period
        self.clock = clock
        self.released_at: float | None = None
        self.unreleased = True  # work (the start-up, to begin with) was done since the last release

    def tick_ended(self, *, worked: bool) -> None:
        self.unreleased = self.unreleased or worked
        if not self.unreleased:
            return
        now = self.clock()
        if self.released_at is not None and now - self.released_at < self.period:
            return
        self.released_at = now
        self.unreleased = False
        self.release()

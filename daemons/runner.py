"""The daemon loop: tick, record a heartbeat, wait for the interval, a wake-up or a stop."""
from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from django.db import close_old_connections, reset_queries
from django.utils import timezone

from . import reporting
from .base import Daemon, TickResult


class StopEvent(Protocol):
    """What the loop waits on: `threading.Event` in tests, signal-driven in a real process.

    `wait(timeout)` returns True once a stop was requested; it may return False early
    when the daemon is woken up.
    """

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


@dataclass
class Counters:
    ticks: int = 0
    processed: int = 0
    errors: int = 0
    last_tick_at: datetime | None = None
    last_outcome: str = ""
    last_duration_ms: int | None = None
    last_error: str = ""


@dataclass
class Runner:
    """Runs one daemon's ticks with the guard every tick needs.

    Each tick runs between two `close_old_connections()` calls and with the query log
    cleared, so a restarted database or a long idle period never breaks the loop. An
    exception in a tick is logged with its traceback, reported to Sentry and counted;
    the loop goes on.
    """

    daemon: Daemon
    instance: int = 0
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = timezone.now
    heartbeat: bool = True
    counters: Counters = field(default_factory=Counters)
    started_at: datetime | None = None

    def __post_init__(self) -> None:
        self.logger = logging.getLogger(f"daemons.{self.daemon.name}")

    def run(self, stop: StopEvent, *, once: bool = False) -> None:
        """Tick until `stop` is set (or once). Never sleeps: it waits on `stop`."""
        self.started_at = self.started_at or self.now()
        self.daemon.stop_requested = stop.is_set  # type: ignore[method-assign]
        interval = self.daemon.interval_seconds()
        while True:
            began = self.clock()
            self.tick()
            if once:
                return
            remaining = max(0.0, interval - (self.clock() - began))
            if stop.wait(remaining):
                return

    def tick(self) -> TickResult | None:
        """Run one guarded tick and record it; return its result, or None if it raised."""
        close_old_connections()
        reset_queries()
        now = self.now()
        began = self.clock()
        result: TickResult | None = None
        try:
            result = self.daemon.tick(now)
        except Exception as exc:
            duration_ms = int((self.clock() - began) * 1000)
            self.counters.errors += 1
            self.counters.last_outcome = "error"
            self.counters.last_error = "".join(traceback.format_exception_only(exc)).strip()
            self.logger.exception("tick failed after %d ms", duration_ms, extra={"action": "tick_error"})
            reporting.capture(exc, daemon=self.daemon.name)
        else:
            duration_ms = int((self.clock() - began) * 1000)
            if result is None:
                result = TickResult()
            self.counters.processed += result.processed
            self.counters.last_outcome = "idle" if result.idle else "ok"
            summary = result.summary or f"processed {result.processed}"
            if result.idle:
                self.logger.debug("idle tick in %d ms", duration_ms, extra={"action": "tick_idle"})
            else:
                self.logger.info(
                    "%s in %d ms", summary, duration_ms, extra={"action": "tick_done", "processed": result.processed}
                )
        self.counters.ticks += 1
        self.counters.last_tick_at = now
        self.counters.last_duration_ms = duration_ms
        if self.heartbeat:
            self.write_heartbeat()
        close_old_connections()
        return result

    def status_text(self) -> str:
        try:
            return self.daemon.status()
        except Exception:
            self.logger.warning("status() failed", exc_info=True)
            return ""

    def write_heartbeat(self, *, stopped: bool = False) -> None:
        """Record this instance's state in its heartbeat row; a DB error is logged, not raised."""
        from .models import Heartbeat

        c = self.counters
        try:
            Heartbeat.objects.update_or_create(
                name=self.daemon.name,
                instance=self.instance,
                host=socket.gethostname(),
                defaults={
                    "pid": os.getpid(),
                    "started_at": self.started_at or self.now(),
                    "last_heartbeat": self.now(),
                    "last_tick_at": c.last_tick_at,
                    "last_outcome": c.last_outcome,
                    "last_duration_ms": c.last_duration_ms,
                    "processed": c.processed,
                    "errors": c.errors,
                    "last_error": c.last_error,
                    "status_text": self.status_text()[:500],
                    "stopped_at": self.now() if stopped else None,
                },
            )
        except Exception:
            self.logger.warning("could not write the heartbeat", exc_info=True)

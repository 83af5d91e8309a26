"""The daemon loop: tick, record a heartbeat, wait for the interval, a wake-up or a stop."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, reset_queries
from django.utils import timezone

from . import reporting
from .base import Daemon, TickResult
from .notify import Notifier

# A database outage is retried with exponential backoff up to this many seconds.
OUTAGE_BACKOFF_CAP = 60.0
# Heartbeats are written at least this often, even while a long tick runs.
HEARTBEAT_MAX_AGE = 30.0


class StopEvent(Protocol):
    """What the loop waits on: `threading.Event` in tests, signal-driven in a real process.

    `wait(timeout)` returns True once a stop was requested; it may return False early
    when the daemon is woken up.
    """

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


def heartbeat_period(interval: float) -> float:
    """How often a daemon with `interval` writes its heartbeat: each tick, within 1..30 s."""
    return min(max(interval, 1.0), HEARTBEAT_MAX_AGE)


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean the database is unreachable, locked or restarting."""
    return isinstance(exc, (OperationalError, InterfaceError))


def error_signature(exc: BaseException) -> tuple[str, str, str]:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (type(exc).__name__, str(exc), where)


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
class RepeatedError:
    """The error that keeps coming back, so the log says so once in a while, not every tick."""

    signature: tuple[str, str, str]
    since: datetime
    count: int = 1
    last_summary: float = 0.0


@dataclass
class Outage:
    since: datetime
    failures: int = 1

    def delay(self) -> float:
        return min(OUTAGE_BACKOFF_CAP, 2.0 ** (self.failures - 1))


@dataclass
class Runner:
    """Runs one daemon's ticks with the guard every tick needs.

    Each tick runs between two `close_old_connections()` calls and with the query log
    cleared, so a restarted database or a long idle period never breaks the loop. An
    exception in a tick is logged with its traceback, reported to Sentry and counted;
    the loop goes on. The same error again is summarised instead of logged in full. A
    database outage is logged and reported once, then retried with exponential backoff
    (capped at 60 s) until the database is back.
    """

    daemon: Daemon
    instance: int = 0
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = timezone.now
    heartbeat: bool = True
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    counters: Counters = field(default_factory=Counters)
    started_at: datetime | None = None

    def __post_init__(self) -> None:
        self.logger = logging.getLogger(f"daemons.{self.daemon.name}")
        self.tick_started: float | None = None  # clock() while a tick runs, read by the watch thread
        self.outage: Outage | None = None
        self.repeated: RepeatedError | None = None
        self.last_heartbeat_write: float | None = None
        self.heartbeat_lock = threading.Lock()

    # --- the loop ---------------------------------------------------------------------

    def run(self, stop: StopEvent, *, once: bool = False) -> None:
        """Tick until `stop` is set (or once). Never sleeps: it waits on `stop`."""
        self.started_at = self.started_at or self.now()
        self.daemon.stop_requested = stop.is_set  # type: ignore[method-assign]
        interval = self.daemon.interval_seconds()
        watchdog = self.notifier.watchdog_interval
        woken = getattr(stop, "consume_wakeup", lambda: False)
        if self.heartbeat and not once:
            self.write_heartbeat()
        next_tick = self.clock()
        next_ping = self.clock()
        while True:
            if self.clock() >= next_tick or woken():
                began = self.clock()
                self.tick()
                if once:
                    return
                next_tick = (self.clock() + self.outage.delay()) if self.outage else (began + interval)
            if watchdog is not None and self.clock() >= next_ping:
                self.notifier.watchdog()
                next_ping = self.clock() + watchdog
            timeout = next_tick - self.clock()
            if watchdog is not None:
                timeout = min(timeout, next_ping - self.clock())
            if stop.wait(max(0.0, timeout)):
                return

    def tick(self) -> TickResult | None:
        """Run one guarded tick and record it; return its result, or None if it raised."""
        close_old_connections()
        reset_queries()
        now = self.now()
        began = self.clock()
        self.tick_started = began
        result: TickResult | None = None
        try:
            result = self.daemon.tick(now)
        except Exception as exc:
            self.tick_started = None
            self.counters.errors += 1
            self.counters.last_outcome = "error"
            self.counters.last_error = "".join(traceback.format_exception_only(exc)).strip()[:2000]
            duration_ms = int((self.clock() - began) * 1000)
            self.on_error(exc, duration_ms)
        else:
            self.tick_started = None
            duration_ms = int((self.clock() - began) * 1000)
            result = result or TickResult()
            self.on_success(result, duration_ms)
        self.counters.ticks += 1
        self.counters.last_tick_at = now
        self.counters.last_duration_ms = duration_ms
        if self.heartbeat and self.heartbeat_due(worked=result is None or not result.idle):
            self.write_heartbeat()
        if self.notifier.enabled:
            self.notifier.status(self.status_line(result))
        close_old_connections()
        return result

    def on_success(self, result: TickResult, duration_ms: int) -> None:
        if self.outage is not None:
            self.logger.warning(
                "database is back after %d failed attempts since %s", self.outage.failures,
                self.outage.since.strftime("%H:%M:%S"), extra={"action": "db_recovered"},
            )
            self.outage = None
        self.repeated = None
        self.counters.processed += result.processed
        self.counters.last_outcome = "idle" if result.idle else "ok"
        if result.idle:
            self.logger.debug("idle tick in %d ms", duration_ms, extra={"action": "tick_idle"})
        else:
            self.logger.info(
                "%s in %d ms", result.summary or f"processed {result.processed}", duration_ms,
                extra={"action": "tick_done", "processed": result.processed},
            )

    def on_error(self, exc: Exception, duration_ms: int) -> None:
        if is_outage(exc):
            if self.outage is None:
                self.outage = Outage(since=self.now())
                self.logger.error(
                    "database unavailable: %s; retrying with backoff up to %d s", exc, OUTAGE_BACKOFF_CAP,
                    exc_info=exc, extra={"action": "db_outage"},
                )
                reporting.capture(exc, daemon=self.daemon.name, kind="db_outage")
            else:
                self.outage.failures += 1
                self.logger.debug("database still unavailable (%d attempts): %s", self.outage.failures, exc,
                                  extra={"action": "db_outage_continues"})
            return
        signature = error_signature(exc)
        if self.repeated is not None and self.repeated.signature == signature:
            rep = self.repeated
            rep.count += 1
            # Say it again at 10, 20, 30... repeats, and at least once a minute.
            if rep.count % 10 == 0 or self.clock() - rep.last_summary >= 60:
                rep.last_summary = self.clock()
                self.logger.error(
                    "same error %d times since %s: %s", rep.count, rep.since.strftime("%H:%M:%S"),
                    self.counters.last_error, extra={"action": "tick_error_repeated", "repeats": rep.count},
                )
            return
        self.repeated = RepeatedError(signature=signature, since=self.now(), last_summary=self.clock())
        self.logger.exception("tick failed after %d ms", duration_ms, extra={"action": "tick_error"})
        reporting.capture(exc, daemon=self.daemon.name)

    # --- heartbeat and status ---------------------------------------------------------

    def heartbeat_due(self, *, worked: bool) -> bool:
        if self.last_heartbeat_write is None or worked:
            return True
        return self.clock() - self.last_heartbeat_write >= heartbeat_period(self.daemon.interval_seconds())

    def status_text(self) -> str:
        try:
            return self.daemon.status()
        except Exception:
            self.logger.debug("status() failed", exc_info=True)
            return ""

    def status_line(self, result: TickResult | None) -> str:
        text = self.status_text()
        if self.outage is not None:
            return f"database unavailable since {self.outage.since:%H:%M:%S}; {text}".strip("; ")
        return text

    def write_heartbeat(self, *, stopped: bool = False, in_thread: bool = False) -> None:
        """Record this instance's state in its heartbeat row; a DB error is logged, not raised."""
        from .models import Heartbeat

        c = self.counters
        key = {"name": self.daemon.name, "instance": self.instance, "host": socket.gethostname()}
        with self.heartbeat_lock:
            self.last_heartbeat_write = self.clock()
            try:
                if in_thread:
                    # Mid-tick: only say we are alive and busy; counters come after the tick.
                    Heartbeat.objects.filter(**key).update(last_heartbeat=self.now(), last_outcome="busy")
                    return
                Heartbeat.objects.update_or_create(
                    **key,
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
            except DatabaseError as exc:
                if self.outage is None:
                    self.logger.warning("could not write the heartbeat: %s", exc, extra={"action": "heartbeat_failed"})
            finally:
                if in_thread:
                    connection.close()

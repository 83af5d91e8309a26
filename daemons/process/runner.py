"""The daemon loop: tick, record a heartbeat, wait for the interval, a wake-up or a stop."""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from datetime import datetime

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, reset_queries
from django.utils import timezone

from daemons.cluster import heartbeat, history
from daemons.cluster.control import is_paused
from daemons.cluster.heartbeat import Counters, heartbeat_period
from daemons.daemon import Daemon, StopEvent, TickResult
from daemons.process import reporting
from daemons.process.backoff import backoff
from daemons.process.exits import Outcome
from daemons.process.memory import MemoryReleaser
from daemons.process.notify import Notifier

# A database outage is retried with exponential backoff up to this many seconds.
OUTAGE_BACKOFF_CAP = 60.0


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean the database is unreachable, locked or restarting."""
    return isinstance(exc, (OperationalError, InterfaceError))


def error_signature(exc: BaseException) -> tuple[str, str, str]:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (type(exc).__name__, str(exc), where)


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
        return backoff(self.failures, base=1.0, cap=OUTAGE_BACKOFF_CAP)


class Pulse:
    """Whether the tick in progress is alive, and when systemd's watchdog is pinged.

    Shared by three parties, each handed it when built: the loop (a tick
    begins and ends), the daemon's `progress()` (through its `Control`) and the watch
    thread (it pings and writes busy heartbeats while the tick is alive). `ring` makes
    the watch thread look again: when a tick begins and when a stalled tick moves again.
    """

    def __init__(self, notifier: Notifier, progress_limit: float, *, ring: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.progress_limit = progress_limit
        self.ring = ring
        self.clock = clock
        self.tick_started: float | None = None  # clock() while a tick runs, read by the watch thread
        self.last_progress: float | None = None  # clock() of the tick's start or its last progress()
        self.last_ping: float | None = None
        self.ping_lock = threading.Lock()

    def tick_began(self, began: float) -> None:
        self.last_progress = began
        self.tick_started = began
        self.ring()

    def tick_ended(self) -> None:
        self.tick_started = None

    def progress(self) -> None:
        """Called by the daemon's `progress()`: the tick is alive; ping now if a ping is due."""
        now = self.clock()
        stalled = self.last_progress is not None and now - self.last_progress > self.progress_limit
        self.last_progress = now
        self.ping_if_due()
        if stalled:
            # The watch thread stopped scheduling pings for this tick; it must start again.
            self.ring()

    def making_progress(self) -> bool:
        """False while a tick has gone `progress_limit` seconds without progress: a hung tick."""
        if self.tick_started is None or self.last_progress is None:
            return True
        return self.clock() - self.last_progress <= self.progress_limit

    def ping_if_due(self) -> None:
        """Send WATCHDOG=1 if a ping period has passed since the last one and the daemon is not hung."""
        period = self.notifier.ping_period
        if period is None:
            return
        with self.ping_lock:
            now = self.clock()
            if self.last_ping is not None and now - self.last_ping < period or not self.making_progress():
                return
            self.last_ping = now
        self.notifier.watchdog()


@dataclass
class Runner:
    """Runs one daemon's ticks with the guard every tick needs.

    Each tick runs between two `close_old_connections()` calls and with the query log
    cleared, so a restarted database or a long idle period never breaks the loop. An
    exception in a tick is logged with its traceback, reported to Sentry and counted;
    the loop goes on. The same error again is summarised instead of logged in full. A
    database outage is logged and reported once, then retried with exponential backoff
    (capped at 60 s) until the database is back. After work, the memory it freed goes back to
    the system (`memory`).

    systemd's watchdog is pinged (WATCHDOG=1) every `notifier.ping_period` while the daemon
    waits between ticks and, during a tick, as long as the tick makes progress: it started,
    or called `progress()`, less than `daemon.progress_limit` seconds ago. The loop pings
    between ticks; the watch thread pings and writes busy heartbeats during a tick. That
    state lives in `pulse`; a process hands the runner the one its daemon's `Control`
    reports progress to (see `daemons.process.lifecycle.DaemonService.wire`).
    """

    daemon: Daemon
    instance: int = 0
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = timezone.now
    heartbeat: bool = True
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    counters: Counters = field(default_factory=Counters)
    started_at: datetime | None = None
    pulse: InitVar[Pulse | None] = None  # the one the daemon's Control reports to; a private one if None
    memory: InitVar[MemoryReleaser | None] = None  # what gives memory back after work; one on `clock` if None

    def __post_init__(self, pulse: Pulse | None, memory: MemoryReleaser | None) -> None:
        self._memory = memory or MemoryReleaser(clock=self.clock)
        self.logger = logging.getLogger(f"daemons.{self.daemon.name}")
        self._pulse = pulse or Pulse(self.notifier, self.daemon.progress_limit, clock=self.clock)
        self.units_before_tick = 0
        self.outage: Outage | None = None
        self.repeated: RepeatedError | None = None
        self.last_heartbeat_write: float | None = None
        self.heartbeat_lock = threading.Lock()
        self.history = history.Recorder(self.daemon.name, self.instance)
        self.pause_checked: float | None = None
        self.is_paused = False

    # --- the loop ---------------------------------------------------------------------

    def run(self, stop: StopEvent, *, once: bool = False) -> TickResult | None:
        """Tick until `stop` is set (or once). Never sleeps: it waits on `stop`.

        Returns the result of the last tick, None if it raised or none ran.
        """
        self.started_at = self.started_at or self.now()
        interval = self.daemon.interval_seconds()
        period = self.notifier.ping_period
        woken = getattr(stop, "consume_wakeup", lambda: False)
        if self.heartbeat and not once:
            self.write_heartbeat()
        next_tick = self.clock()
        result: TickResult | None = None
        while True:
            if self.clock() >= next_tick or woken():
                began = self.clock()
                if not once and self.heartbeat and self.paused():
                    # Paused by an operator: stay up and say so in the heartbeat, but do no work.
                    if self.heartbeat_due(worked=False):
                        self.write_heartbeat()
                else:
                    result = self.tick()
                    if not once:
                        self._memory.tick_ended(worked=result is None or not result.idle)
                if once:
                    return result
                next_tick = (self.clock() + self.outage.delay()) if self.outage else (began + interval)
            self._pulse.ping_if_due()
            timeout = next_tick - self.clock()
            last_ping = self._pulse.last_ping
            if last_ping is not None and period is not None:
                timeout = min(timeout, last_ping + period - self.clock())
            if stop.wait(max(0.0, timeout)):
                return result

    def paused(self) -> bool:
        """Whether an operator paused this instance, read at most once per interval.

        So ticks brought early by wake-ups cost no extra read, and a pause is still obeyed
        within one interval.
        """
        if self.pause_checked is None or self.clock() - self.pause_checked >= self.daemon.interval_seconds():
            self.pause_checked = self.clock()
            self.is_paused = is_paused(self.daemon.name, self.instance)
        return self.is_paused

    def tick(self) -> TickResult | None:
        """Run one guarded tick and record it; return its result, or None if it raised."""
        close_old_connections()
        reset_queries()
        now = self.now()
        began = self.clock()
        self.units_before_tick = self.daemon.control.units
        self._pulse.tick_began(began)
        result: TickResult | None = None
        try:
            result = self.daemon.tick(now)
        except Exception as exc:  # noqa: BLE001 - the tick guard: any error is logged, counted, reported
            self._pulse.tick_ended()
            self.counters.errors += 1
            self.counters.last_outcome = Outcome.ERROR
            self.counters.last_error = "".join(traceback.format_exception_only(exc)).strip()[:2000]
            duration_ms = int((self.clock() - began) * 1000)
            self.on_error(exc, duration_ms)
        else:
            self._pulse.tick_ended()
            duration_ms = int((self.clock() - began) * 1000)
            result = result or TickResult()
            self.on_success(result, duration_ms)
        self.counters.ticks += 1
        self.counters.last_tick_at = now
        self.counters.last_duration_ms = duration_ms
        if self.heartbeat:
            self.history.record(now, duration_ms=duration_ms, processed=result.processed if result else 0,
                                error=result is None)
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
        self.counters.last_outcome = Outcome.IDLE if result.idle else Outcome.OK
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

    def tick_units(self) -> int:
        """Units of work the tick in progress reported through `progress()` so far."""
        return self.daemon.control.units - self.units_before_tick if self._pulse.tick_started is not None else 0

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
        name, instance = self.daemon.name, self.instance
        with self.heartbeat_lock:
            if in_thread and self._pulse.tick_started is None:
                return  # the tick ended meanwhile; the loop writes the full row
            self.last_heartbeat_write = self.clock()
            try:
                if in_thread:
                    # Mid-tick: alive and busy, with the units reported so far.
                    heartbeat.write_busy(name, instance, processed=self.counters.processed + self.tick_units())
                    return
                if stopped:
                    self.history.flush(self.now())
                heartbeat.write(name, instance, counters=self.counters, started_at=self.started_at or self.now(),
                                status_text=self.status_text(), stopped=stopped)
            except DatabaseError as exc:
                if self.outage is None:
                    self.logger.warning("could not write the heartbeat: %s", exc, extra={"action": "heartbeat_failed"})
            finally:
                if in_thread:
                    connection.close()

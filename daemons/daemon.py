"""The Daemon base class: a name, an interval and a tick; everything else is the framework's."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class TickResult:
    """What one tick did. `processed` counts units of work; `summary` says it in words."""

    processed: int = 0
    summary: str = ""

    @property
    def idle(self) -> bool:
        return self.processed == 0


class StopEvent(Protocol):
    """What a loop waits on: `threading.Event` in tests, signal-driven in a real process.

    `wait(timeout)` returns True once a stop was requested; it may return False early
    when the daemon is woken up.
    """

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


class Control:
    """The stop and progress API the framework hands a daemon.

    `stop_requested()` reads the process's stop event. `progress(units)` counts units of
    work and stamps the time of the last one, then calls `on_progress` (in a process, the
    runner's `Pulse`, which keeps systemd's watchdog and the heartbeat current). A daemon
    built without one (in a test or a shell) gets a Control with its own event, which
    nothing sets.
    """

    def __init__(self, stop: StopEvent | None = None, clock: Callable[[], float] = time.monotonic, *,
                 on_progress: Callable[[], None] | None = None) -> None:
        self.stop: StopEvent = stop if stop is not None else threading.Event()
        self.clock = clock
        self.units = 0
        self.last_progress: float | None = None
        self.on_progress = on_progress

    def stop_requested(self) -> bool:
        return self.stop.is_set()

    def progress(self, units: int = 1) -> None:
        self.units += units
        self.last_progress = self.clock()
        if self.on_progress is not None:
            self.on_progress()


def logger_name(daemon_cls: type[Daemon]) -> str:
    """The logger of a daemon class: `<app label>.daemons.<name>`, the app being the one that defines it."""
    from django.apps import apps

    app = apps.get_containing_app_config(daemon_cls.__module__)
    label = app.label if app is not None else daemon_cls.__module__.split(".")[0]
    return f"{label}.daemons.{daemon_cls.name}"


class Daemon:
    """Subclass this, set `name`, and write `tick(now)`.

    `tick` is called once per interval (sooner when the daemon is woken) with the current
    time. It should do one bounded unit of work and return a `TickResult`. Exceptions are
    caught, logged and reported by the framework; the daemon keeps running.
    """

    name: ClassVar[str] = ""
    interval: ClassVar[float | timedelta] = 5.0
    # Seconds a tick may go without calling progress() before it counts as hung.
    progress_limit: ClassVar[float] = 300.0

    def __init__(self, instance: int = 0, control: Control | None = None) -> None:
        self.instance = instance
        self.control = control if control is not None else Control()
        self.logger = logging.getLogger(logger_name(type(self)))

    @classmethod
    def wake(cls) -> int:
        """Ask every running instance of this daemon to tick now; never blocks or raises."""
        from daemons.cluster.wakeup import wake

        return wake(cls.name)

    def stop_requested(self) -> bool:
        """True once a stop was asked for; long ticks check it between units of work."""
        return self.control.stop_requested()

    def progress(self, units: int = 1) -> None:
        """Report `units` of work done inside a long tick (for example once per customer).

        The framework uses it to keep the heartbeat and systemd's watchdog current while
        a tick makes progress. A tick without progress for `progress_limit` seconds gets
        no more watchdog pings (systemd restarts it) and shows as hung.
        """
        self.control.progress(units)

    @classmethod
    def interval_seconds(cls) -> float:
        value = cls.interval
        return value.total_seconds() if isinstance(value, timedelta) else float(value)

    def setup(self) -> None:
        """Called once by the framework before the first tick; set up what `tick` uses here."""

    def tick(self, now: datetime) -> TickResult:
        raise NotImplementedError

    def status(self) -> str:
        """One line for `daemonstatus` and systemd's STATUS=; may query the database."""
        return ""

    def work_in_progress(self) -> str:
        """What the current tick is doing, in words, for the log when a stop abandons it.

        Called from another thread: read attributes only, no database.
        """
        return ""

    def teardown(self) -> None:
        """Called once when the daemon stops."""

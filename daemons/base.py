"""The Daemon base class: a name, an interval and a tick; everything else is the framework's."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar


@dataclass(frozen=True)
class TickResult:
    """What one tick did. `processed` counts units of work; `summary` says it in words."""

    processed: int = 0
    summary: str = ""

    @property
    def idle(self) -> bool:
        return self.processed == 0


class Daemon:
    """Subclass this, set `name`, and write `tick(now)`.

    `tick` is called once per interval (sooner when the daemon is woken) with the current
    time. It should do one bounded unit of work and return a `TickResult`. Exceptions are
    caught, logged and reported by the framework; the daemon keeps running.
    """

    name: ClassVar[str] = ""
    interval: ClassVar[float | timedelta] = 5.0

    def __init__(self, instance: int = 0) -> None:
        self.instance = instance

    @classmethod
    def wake(cls) -> int:
        """Ask every running instance of this daemon to tick now; never blocks or raises."""
        from .wakeup import wake

        return wake(cls.name)

    def stop_requested(self) -> bool:
        """True once a stop was asked for; long ticks check it between units of work.

        The runner replaces this with its stop event's `is_set`.
        """
        return False

    def progress(self, units: int = 1) -> None:
        """Report `units` of work done inside a long tick (for example once per customer).

        The framework uses it to keep the heartbeat and systemd's watchdog current while
        a tick makes progress, and to call a tick that makes none hung.
        """

    @classmethod
    def interval_seconds(cls) -> float:
        value = cls.interval
        return value.total_seconds() if isinstance(value, timedelta) else float(value)

    def setup(self) -> None:
        """Called once in the daemon process before the first tick."""

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

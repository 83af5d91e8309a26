"""Test helpers and pytest fixtures for daemon authors: ticks at given times, status text, log records.

The helpers work in any test (Django's `TestCase` under `manage.py test`, or pytest). Enable
the pytest fixtures with `pytest_plugins = ["daemons.testing"]` in your conftest.py.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from daemons.daemon import Daemon, TickResult


def tick_times(start: datetime, every: timedelta | float, count: int) -> list[datetime]:
    """`count` moments from `start`, `every` apart (a timedelta or seconds)."""
    step = every if isinstance(every, timedelta) else timedelta(seconds=every)
    return [start + step * i for i in range(count)]


class LogCapture(logging.Handler):
    """Collects the records of the `daemons` loggers (and any named others) for assertions.

    Assert on the structured `action` field a daemon logs with `extra={"action": ...}`,
    never on message wording.
    """

    def __init__(self, *logger_names: str, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.logger_names = logger_names or ("daemons",)
        self.records: list[logging.LogRecord] = []
        self._saved: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogCapture:
        for name in self.logger_names:
            self.watch(name)
        return self

    def watch(self, name: str) -> None:
        """Also capture logger `name` (a daemon's own `logger`, say) unless a captured logger is its ancestor."""
        if any(not held.name or held.name == "root" or f"{name}.".startswith(f"{held.name}.")
               for held, _ in self._saved):
            return
        logger = logging.getLogger(name)
        self._saved.append((logger, logger.level))
        logger.setLevel(min(self.level, logger.getEffectiveLevel()))
        logger.addHandler(self)

    def __exit__(self, *exc: object) -> None:
        for logger, level in self._saved:
            logger.removeHandler(self)
            logger.setLevel(level)
        self._saved.clear()

    def clear(self) -> None:
        self.records.clear()

    def with_action(self, action: str, **fields: object) -> list[logging.LogRecord]:
        """Records whose `action` is `action` and whose other extra fields equal `fields`."""
        return [
            record for record in self.records
            if getattr(record, "action", None) == action
            and all(getattr(record, key, object()) == value for key, value in fields.items())
        ]

    def actions(self) -> list[str]:
        """The `action` of every record that has one, in order."""
        return [record.action for record in self.records if hasattr(record, "action")]

    def assert_action(self, action: str, **fields: object) -> logging.LogRecord:
        """Return the one record with `action` (and `fields`); fail listing what was logged."""
        found = self.with_action(action, **fields)
        if len(found) != 1:
            raise AssertionError(
                f"expected one log record with action={action!r} {fields or ''}, found {len(found)}; "
                f"actions logged: {self.actions()}"
            )
        return found[0]

    def assert_no_action(self, action: str, **fields: object) -> None:
        found = self.with_action(action, **fields)
        if found:
            raise AssertionError(f"expected no log record with action={action!r}, found {len(found)}: "
                                 f"{[r.getMessage() for r in found]}")


class DaemonHarness:
    """Drives one daemon object in the test process: ticks at given times, no loop, no sleeping.

    `setup()` runs before the first tick, as in a real process. An exception in a tick
    propagates, so the test shows its traceback; the runner's guard, which logs and goes
    on, is the framework's job and is tested there.
    """

    def __init__(self, daemon: Daemon, logs: LogCapture | None = None) -> None:
        self.daemon = daemon
        self.logs = logs
        self.results: list[TickResult] = []
        self._set_up = False
        if logs is not None:
            logs.watch(daemon.logger.name)

    @property
    def stopping(self) -> bool:
        """Set it to make the daemon's `stop_requested()` true, as a SIGTERM would."""
        return self.daemon.control.stop_requested()

    @stopping.setter
    def stopping(self, value: bool) -> None:
        # A daemon built without a stop event has a threading.Event; one handed another kind may not be settable.
        stop = self.daemon.control.stop
        verb = "set" if value else "clear"
        change = getattr(stop, verb, None)
        if change is None:
            raise TypeError(f"cannot {verb} the daemon's stop event, a {type(stop).__name__}")
        change()

    def tick(self, now: datetime) -> TickResult:
        """Run one tick at `now` and return its result (an empty result for None)."""
        if not self._set_up:
            self.daemon.setup()
            self._set_up = True
        result = self.daemon.tick(now) or TickResult()
        self.results.append(result)
        return result

    def run_ticks(self, times: Iterable[datetime]) -> list[TickResult]:
        """Tick once at each of `times`, in order."""
        return [self.tick(now) for now in times]

    def status_text(self) -> str:
        """The line `daemonstatus` would show for this daemon."""
        return self.daemon.status()

    @property
    def processed(self) -> int:
        """Units of work done by all ticks so far."""
        return sum(result.processed for result in self.results)

    def close(self) -> None:
        if self._set_up:
            self.daemon.teardown()
            self._set_up = False


if importlib.util.find_spec("pytest") is not None:
    # The fixtures, for `pytest_plugins = ["daemons.testing"]`. Without pytest (Django's own
    # test runner) the helpers above work all the same.
    from collections.abc import Callable, Iterator
    from typing import Any

    import pytest

    @pytest.fixture
    def daemon_logs() -> Iterator[LogCapture]:
        """Log records of the `daemons` loggers during the test (see `LogCapture`)."""
        with LogCapture() as capture:
            yield capture


    @pytest.fixture
    def daemon_harness(daemon_logs: LogCapture) -> Iterator[Callable[..., DaemonHarness]]:
        """A factory: `daemon_harness(MyDaemon)` (a class or an object) returns a `DaemonHarness`.

        Its `.logs` is the test's `daemon_logs`. Daemons are torn down after the test.
        """
        made: list[DaemonHarness] = []

        def make(daemon: Daemon | type[Daemon], *args: Any, **kwargs: Any) -> DaemonHarness:
            obj = daemon(*args, **kwargs) if isinstance(daemon, type) else daemon
            harness = DaemonHarness(obj, logs=daemon_logs)
            made.append(harness)
            return harness

        yield make
        for harness in made:
            harness.close()

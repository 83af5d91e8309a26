"""The helpers daemon authors test with: ticks at given times, status text, log assertions."""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from daemons import Daemon, TickResult
from daemons.testing import DaemonHarness, LogCapture, tick_times

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Echo(Daemon):
    name = "echo"

    def __init__(self, instance: int = 0) -> None:
        super().__init__(instance)
        self.seen: list[datetime] = []
        self.events: list[str] = []

    def setup(self) -> None:
        self.events.append("setup")

    def tick(self, now: datetime) -> TickResult:
        self.seen.append(now)
        logging.getLogger("daemons.echo").info("echo", extra={"action": "echoed", "n": len(self.seen)})
        if now.minute == 59:
            raise ValueError("bad minute")
        return TickResult(processed=1)

    def status(self) -> str:
        return f"{len(self.seen)} seen"

    def teardown(self) -> None:
        self.events.append("teardown")


def test_tick_times() -> None:
    assert tick_times(T0, 30, 3) == [T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)]
    assert tick_times(T0, timedelta(hours=1), 2)[1] == T0 + timedelta(hours=1)


def test_harness_ticks_at_given_times_with_setup_status_and_logs(daemon_harness) -> None:
    harness = daemon_harness(Echo)
    results = harness.run_ticks(tick_times(T0, 5, 4))
    assert harness.daemon.seen == tick_times(T0, 5, 4)
    assert [r.processed for r in results] == [1, 1, 1, 1] and harness.processed == 4
    assert harness.daemon.events == ["setup"]
    assert harness.status_text() == "4 seen"
    assert harness.logs.actions() == ["echoed"] * 4
    assert harness.logs.assert_action("echoed", n=3).levelname == "INFO"
    harness.logs.assert_no_action("echoed", n=5)
    harness.close()
    assert harness.daemon.events == ["setup", "teardown"]


def test_stopping_sets_and_clears_the_stop_a_tick_reads() -> None:
    from daemons.daemon import Control

    harness = DaemonHarness(Echo())
    harness.stopping = True
    assert harness.daemon.stop_requested() and harness.stopping
    harness.stopping = False
    assert not harness.daemon.stop_requested()

    class SetOnly:
        """A stop event that can be set but never cleared, as a real process's is."""

        def __init__(self) -> None:
            self.flag = False

        def wait(self, timeout: float | None = None) -> bool:
            return self.flag

        def is_set(self) -> bool:
            return self.flag

        def set(self) -> None:
            self.flag = True

    daemon = Echo()
    daemon.control = Control(SetOnly())
    held = DaemonHarness(daemon)
    held.stopping = True
    assert daemon.stop_requested()
    with pytest.raises(TypeError, match="cannot clear"):
        held.stopping = False


def test_an_exception_in_a_tick_reaches_the_test() -> None:
    harness = DaemonHarness(Echo())
    with pytest.raises(ValueError, match="bad minute"):
        harness.tick(T0.replace(minute=59))


def test_log_assertions_explain_what_was_logged() -> None:
    with LogCapture() as logs:
        logging.getLogger("daemons.x").debug("d", extra={"action": "one"})
        logging.getLogger("daemons.x").info("i", extra={"action": "two"})
    logging.getLogger("daemons.x").info("after", extra={"action": "three"})
    assert logs.actions() == ["one", "two"]
    with pytest.raises(AssertionError, match=r"action='three'.*found 0; actions logged: \['one', 'two'\]"):
        logs.assert_action("three")
    with pytest.raises(AssertionError, match="expected no log record with action='one'"):
        logs.assert_no_action("one")


def test_the_helpers_work_where_pytest_is_not_installed() -> None:
    """Django's `manage.py test` runs the generated tests: daemons.testing must import without pytest."""
    import subprocess
    import sys

    script = ("import sys; sys.modules['pytest'] = None\n"  # what Python sees when the package is absent
              "import django; django.setup()\n"
              "from daemons import testing\n"
              "assert testing.DaemonHarness and testing.LogCapture and not hasattr(testing, 'daemon_harness')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    from daemons import testing

    assert callable(testing.daemon_harness) and callable(testing.daemon_logs)  # with pytest: the fixtures

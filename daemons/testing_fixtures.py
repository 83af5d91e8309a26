"""The pytest fixtures of `daemons.testing`, which loads them only where pytest is installed."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .base import Daemon
from .testing import DaemonHarness, LogCapture


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

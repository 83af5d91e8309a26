"""Waiting for a condition with a deadline, never a fixed sleep."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(predicate: Callable[..., T | None], timeout: float = 10.0, message: str = "condition", *,
             interval: float = 0.02) -> T:
    """Poll `predicate()` every `interval` seconds until it returns something truthy, and return that.

    At the deadline it fails the test with pytest.fail; a benchmark script, which has no test to fail,
    ends with the same exception and message.
    """
    # Callable[..., ]: mypy infers no type for a lambda that binds a loop variable (`lambda x=x: ...`) otherwise.
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)

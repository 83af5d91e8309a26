"""Counts the SQL statements a process runs into a file the harness reads: one 8-byte counter per process.

The counter is a shared mapping of `$BENCH_COUNTER_DIR/<pid>`, so counting costs an add
and the harness sees the figure of a running worker without asking it.
"""
from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from typing import Any

_counter: tuple[int, mmap.mmap] | None = None


def _slot() -> mmap.mmap | None:
    global _counter
    directory = os.environ.get("BENCH_COUNTER_DIR")
    if not directory:
        return None
    pid = os.getpid()
    if _counter is None or _counter[0] != pid:  # a forked worker counts in its own file
        with open(os.path.join(directory, str(pid)), "w+b") as file:
            file.write(b"\0" * 8)
            file.flush()
            _counter = (pid, mmap.mmap(file.fileno(), 8))
    return _counter[1]


def bump(count: int = 1) -> None:
    """Add `count` statements to this process's counter (nothing when not benchmarking)."""
    slot = _slot()
    if slot is not None:
        slot[:8] = struct.pack("q", struct.unpack("q", slot[:8])[0] + count)


def _wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict) -> Any:
    bump()
    return execute(sql, params, many, context)


def count_queries(sender: Any, connection: Any, **kwargs: Any) -> None:
    """connection_created receiver: count every statement run on the new connection."""
    if os.environ.get("BENCH_COUNTER_DIR") and _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_wrapper)


def total(directory: str) -> int:
    """The statements counted by every process that wrote into `directory`."""
    result = 0
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as file:
            data = file.read(8)
        if len(data) == 8:
            result += struct.unpack("q", data)[0]
    return result

"""Every exit code the framework's processes use, named, each with one meaning."""
from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """How a daemon, a supervisor or `rundaemon` ended.

    1 and 2 keep the meaning every command has (failed, usage); the codes a running
    daemon ends with are its own, so a supervisor, systemd or a shell can tell them apart.
    """

    OK = 0  # a clean stop: the work in flight finished, the heartbeat says stopped
    FAILED = 1  # the command failed or the process never became ready (one line says why)
    USAGE = 2  # bad arguments
    RELOAD = 3  # `--reload`: the child asks its parent for a new child after a code change
    TICK_FAILED = 10  # `--once`: the one tick raised
    ABANDONED = 11  # the stop deadline passed: the work in flight was abandoned
    FORCED = 12  # a second stop signal: exit now, the work in flight abandoned
    ORPHANED = 13  # a supervisor's child whose supervisor died before it could be told
    CRASHED = 70  # EX_SOFTWARE: an exception escaped the daemon's loop


class Status(IntEnum):
    """`daemonstatus`'s exit codes: LSB's codes for a status action."""

    RUNNING = 0
    STALE = 1  # dead, but its PID file is left
    STOPPED = 3  # not running
    HUNG = 4  # LSB's "status unknown": it holds its lock but writes no heartbeat

"""Every state, tick outcome and exit code the framework reports, named once, each with one meaning."""
from __future__ import annotations

from enum import IntEnum, StrEnum


class State(StrEnum):
    """A daemon instance's state, as `daemonstatus`, the dashboard and the health endpoint name it."""

    RUNNING = "running"
    HUNG = "hung"  # it holds its lock but its heartbeat is overdue
    STALE = "stale"  # dead, but its PID file is left
    STOPPED = "stopped"
    DEAD = "dead"  # the cluster view's: no heartbeat for three heartbeat periods and no clean stop
    RESTARTING = "restarting"  # a supervisor starts it again after its backoff
    PAUSED = "paused"  # the health verdict for a daemon an operator paused: running, doing no work
    UNKNOWN = "unknown"  # the health verdict for a name that no app registers


class Outcome(StrEnum):
    """How a daemon's last tick (or a job's last run) ended, as its heartbeat row keeps it."""

    OK = "ok"
    IDLE = "idle"  # the tick found no work
    ERROR = "error"
    BUSY = "busy"  # a tick is still running and reports progress


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


# Every state with its exit code, from best to worst (see `daemons.console.status.worst_exit_code`).
# "dead", the cluster view's, is LSB's "dead" like a stale PID file.
STATE_EXIT_CODES = {State.RUNNING: Status.RUNNING, State.STOPPED: Status.STOPPED, State.RESTARTING: Status.STOPPED,
                    State.STALE: Status.STALE, State.DEAD: Status.STALE, State.HUNG: Status.HUNG}

"""Stopping a daemon: signal the process that holds the PID lock, and only that one."""
from __future__ import annotations

import os
import pwd
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from daemons.process import pidfile


class StopError(Exception):
    """The daemon runs but can't be signalled by us; the message is one line for the operator."""


@dataclass(frozen=True)
class StopOutcome:
    state: str  # "stopped" | "not_running" | "timeout" | "killed"
    pid: int | None
    stale_pid: int | None = None


def wait_unlocked(path: Path, timeout: float) -> bool:
    """Wait until nobody holds the lock on `path`; return False at the deadline."""
    deadline = time.monotonic() + timeout
    while pidfile.is_locked(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _owner(pid: int) -> str:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return "another user"
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _signal_holder(path: Path, signum: int) -> int | None:
    """Send `signum` to the lock holder through a pidfd, so a recycled PID can't be hit.

    Returns the PID signalled, or None if nobody holds the lock. Raises `StopError` if
    the file is locked but its holder can't be named, or we may not signal it.
    """
    pid = pidfile.read_holder(path)
    if pid is None:
        if pidfile.is_locked(path):
            raise StopError(f"{path} is locked but the process holding it can't be identified; not signalled")
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        # Between reading the PID and opening the pidfd the holder may have died and its
        # PID been reused: check again that this very process holds the file.
        if pidfile.read_holder(path, wait=0) != pid:
            return None
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return None
    except PermissionError:
        raise StopError(f"no permission to signal pid {pid}, which runs as {_owner(pid)}; "
                        "run this as that user or as root") from None
    finally:
        os.close(pidfd)
    return pid


def stop(path: Path, *, timeout: float = 10.0, kill: bool = False) -> StopOutcome:
    """SIGTERM the daemon holding `path` and wait up to `timeout` for its lock to go.

    Never signals the PID written in a stale file. With `kill`, a daemon still running at
    the deadline gets SIGKILL. A daemon that runs but that we can't signal (another
    user's, or one whose holder can't be named) raises `StopError`, never "not running".
    """
    pid = _signal_holder(path, signal.SIGTERM)
    if pid is None:
        return StopOutcome("not_running", None, stale_pid=pidfile.read_pid(path))
    if wait_unlocked(path, timeout):
        return StopOutcome("stopped", pid)
    if not kill:
        return StopOutcome("timeout", pid)
    _signal_holder(path, signal.SIGKILL)
    if wait_unlocked(path, 5.0):
        pidfile.remove_stale(path)
    return StopOutcome("killed", pid)


def send_signal(path: Path, signum: int) -> int | None:
    """Send `signum` to the daemon holding the lock on `path`, by the path `stop` takes; its PID, or None.

    None means nobody holds the lock: a PID written in a stale file is never signalled.
    """
    return _signal_holder(path, signum)

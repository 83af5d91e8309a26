"""The operator's verbs over lifecycle, stopping and status: start unless running, restart, signal, stop many."""
from __future__ import annotations

import errno
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.utils import timezone

from . import conf, pidfile, registry, stopping
from .base import Daemon
from .lifecycle import Lifecycle, StartupError
from .paths import RunPaths, instances, stem
from .privileges import Credentials
from .status import DaemonStatus, format_duration, read_status

# A stopping daemon gives up on its work at DAEMONS_STOP_TIMEOUT; this is how much longer
# we give it to release its PID file before we call the stop late.
STOP_GRACE = 2.0

# `signaldaemon` actions: the signal each one sends; None is a datagram on the wake-up socket.
ACTIONS: dict[str, signal.Signals | None] = {
    "reopen-logs": signal.SIGHUP,
    "toggle-debug": signal.SIGUSR1,
    "wake": None,
}


class ControlError(Exception):
    """The verb could not be carried out; the message is one line for the operator."""


def stop_wait() -> float:
    """Seconds a stop waits for the daemon by default: its own stop deadline plus `STOP_GRACE`."""
    return conf.stop_timeout() + STOP_GRACE


def label(name: str, instance: int) -> str:
    """How commands name a daemon instance: as its files are named (`name`, `name.2`)."""
    return stem(name, instance)


# --- start ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    pid: int
    already_running: bool
    log: Path


def hung_reason(status: DaemonStatus) -> str:
    """Why a daemon that holds its lock is hung, in words (its heartbeat's age)."""
    if status.last_heartbeat is None:
        return "it never wrote a heartbeat"
    age = (timezone.now() - status.last_heartbeat).total_seconds()
    return f"no heartbeat for {format_duration(age)}"


def start(daemon_cls: type[Daemon], *, instance: int = 0, credentials: Credentials | None = None) -> Started:
    """Start the daemon detached unless it already runs on this host, as an LSB `start` does.

    A healthy daemon holding the lock is success: `already_running=True` with its PID, and
    nothing is started. A stale PID file is replaced by the new daemon. Raises
    `StartupError` with one line when the start fails, or when the daemon holds its lock
    but is hung (a start that leaves a dead daemon in place must not look like success).
    """
    name = daemon_cls.name
    paths = RunPaths.for_daemon(name, instance)
    current = _running(name, instance)
    if current is not None:
        return Started(current, True, paths.log)
    lifecycle = Lifecycle(daemon_cls, instance=instance, detach=True, credentials=credentials, paths=paths)
    try:
        lifecycle.run()
    except StartupError:
        # Somebody else started it between our look and our start: still a running daemon.
        current = _running(name, instance)
        if current is not None:
            return Started(current, True, paths.log)
        raise
    assert lifecycle.pid is not None
    return Started(lifecycle.pid, False, paths.log)


def _running(name: str, instance: int) -> int | None:
    """The PID of the healthy daemon running `name`/`instance` here; StartupError if it is hung."""
    status = read_status(name, instance)
    if status.state == "hung":
        raise StartupError(f"already running (pid {status.pid}) but hung: {hung_reason(status)}; "
                           f"restart it with `restartdaemon {name} --kill`")
    if status.state == "running" and status.pid:
        return status.pid
    return None


# --- restart --------------------------------------------------------------------------

@dataclass(frozen=True)
class Restarted:
    old_pid: int | None  # None: it was not running
    new_pid: int
    killed: bool
    log: Path


def restart(daemon_cls: type[Daemon], *, instance: int = 0, timeout: float | None = None, kill: bool = False,
            credentials: Credentials | None = None) -> Restarted:
    """Stop the daemon (as `stopdaemon` does), then start it again detached.

    Waits up to `timeout` (default `stop_wait()`) for the old process to release its PID
    file; with `kill` it is SIGKILLed at that deadline. A daemon that was not running is
    simply started. Raises `ControlError` if the old process is still running at the
    deadline (nothing is started then) and `StartupError` if the new one fails to start.
    """
    timeout = stop_wait() if timeout is None else timeout
    paths = RunPaths.for_daemon(daemon_cls.name, instance)
    outcome = stopping.stop(paths.pid, timeout=timeout, kill=kill)
    if outcome.state == "timeout":
        raise ControlError(f"pid {outcome.pid} did not stop within {timeout:g}s; not restarted (try --kill)")
    lifecycle = Lifecycle(daemon_cls, instance=instance, detach=True, credentials=credentials, paths=paths)
    lifecycle.run()
    assert lifecycle.pid is not None
    return Restarted(outcome.pid, lifecycle.pid, outcome.state == "killed", paths.log)


# --- signal ---------------------------------------------------------------------------

def signal_daemon(name: str, instance: int, action: str) -> int | None:
    """Ask the daemon that holds the lock on its PID file to do `action` (a key of `ACTIONS`).

    Returns the PID that was asked, or None if no process holds the lock (a PID written
    in a stale file is never signalled). Signals go through `stopping.send_signal`, the
    path `stopdaemon` takes; `wake` is a datagram on the holder's own wake-up socket.
    Raises `ControlError` if the daemon can't be reached that way.
    """
    registry.get(name)
    paths = RunPaths.for_daemon(name, instance)
    signum = ACTIONS[action]
    if signum is not None:
        return stopping.send_signal(paths.pid, signum)
    pid = pidfile.read_holder(paths.pid)
    if pid is not None:
        _send_wake(paths.socket, pid)
    return pid


def _send_wake(path: Path, pid: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(b"wake", str(path))
        except OSError as exc:
            # EAGAIN: wake-ups are already queued, which is as good as ours.
            if exc.errno != errno.EAGAIN:
                raise ControlError(f"pid {pid} has no usable wake-up socket at {path} ({exc.strerror}); "
                                   "it wakes at its next interval") from None


# --- stop many ------------------------------------------------------------------------

@dataclass(frozen=True)
class StopTarget:
    label: str
    pid_file: Path
    extra_wait: float = 0.0  # beyond the caller's timeout: a supervisor first waits for its children


@dataclass(frozen=True)
class StopReport:
    target: StopTarget
    outcome: stopping.StopOutcome | None  # None: `error` says why it could not be stopped
    error: str = ""


def stop_target(name: str, instance: int = 0) -> StopTarget:
    return StopTarget(label(name, instance), RunPaths.for_daemon(name, instance).pid)


def all_stop_targets() -> list[StopTarget]:
    """What `stopdaemon --all` stops: every instance of every registered daemon with a PID file here.

    This list is the one place to add another process that `--all` must stop.
    """
    from . import supervisor

    # The supervisor first, so it stops restarting the children that stop beside it.
    head = [StopTarget(supervisor.NAME, supervisor.pid_path(), extra_wait=conf.stop_timeout())]
    targets = (stop_target(name, instance) for name in registry.names() for instance in instances(name))
    return [target for target in (*head, *targets) if target.pid_file.exists()]


def stop_many(targets: list[StopTarget], *, timeout: float, kill: bool,
              on_done: Callable[[StopReport], None], on_wait: Callable[[list[StopTarget], float], None],
              every: float = 1.0) -> list[StopReport]:
    """Stop every target at once, each through `stopping.stop`; return a report per target.

    Each gets SIGTERM (only the process holding its lock), then up to `timeout` seconds,
    then SIGKILL if `kill`. `on_done(report)` is called as each one finishes, in that
    order; `on_wait(pending, elapsed)` every `every` seconds while some are still stopping.
    Both are called from the caller's thread.
    """
    finished: queue.Queue[StopReport] = queue.Queue()

    def stop_one(target: StopTarget) -> None:
        try:
            report = StopReport(target, stopping.stop(target.pid_file, timeout=timeout + target.extra_wait, kill=kill))
        except Exception as exc:  # whatever it is, it is reported, never lost in a thread
            report = StopReport(target, None, str(exc))
        finished.put(report)

    for target in targets:
        threading.Thread(target=stop_one, args=(target,), name=f"stop {target.label}", daemon=True).start()
    pending = list(targets)
    reports: list[StopReport] = []
    began = time.monotonic()
    next_wait = began + every
    while pending:
        try:
            report = finished.get(timeout=max(0.0, next_wait - time.monotonic()))
        except queue.Empty:
            on_wait(list(pending), time.monotonic() - began)
            next_wait += every
            continue
        pending.remove(report.target)
        reports.append(report)
        on_done(report)
    return reports

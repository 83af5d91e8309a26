"""The operator's verbs over lifecycle, stopping and status: start unless running, restart, signal, stop many."""
from __future__ import annotations

import errno
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daemons import conf, registry
from daemons.cluster.heartbeat import hung_reason
from daemons.conf import stop_wait
from daemons.console import stopping
from daemons.console.status import lock_status
from daemons.daemon import Daemon
from daemons.process import pidfile, supervision
from daemons.process.exits import State
from daemons.process.lifecycle import Lifecycle, StartupError
from daemons.process.paths import RunPaths, instances, stem
from daemons.process.privileges import Credentials
from daemons.process.supervision import SupervisionError

if TYPE_CHECKING:
    from daemons.process.children import ChildSpec

# `signaldaemon` actions: the signal each one sends; None is a datagram on the wake-up socket.
ACTIONS: dict[str, signal.Signals | None] = {
    "reopen-logs": signal.SIGHUP,
    "toggle-debug": signal.SIGUSR1,
    "wake": None,
}


class ControlError(Exception):
    """The verb could not be carried out; the message is one line for the operator."""


def label(name: str, instance: int) -> str:
    """How commands name a daemon instance: as its files are named (`name`, `name.2`)."""
    return stem(name, instance)


# --- start ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    pid: int
    already_running: bool
    log: Path
    supervised: bool = False  # started by the running supervisor, as its child


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
    if _supervised(name, instance):
        pid = _ask_one("start", label(name, instance))
        return Started(pid, False, paths.log, supervised=True)
    lifecycle = Lifecycle.for_daemon(daemon_cls, instance=instance, detach=True, credentials=credentials, paths=paths)
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


def _supervised(name: str, instance: int) -> supervision.ChildView | None:
    """The running supervisor's view of this daemon instance, if the supervisor runs it."""
    return supervision.children().get((name, instance))


def _ask_one(verb: str, child: str, timeout: float | None = None) -> int:
    """Ask the supervisor to `verb` (start, restart) child `child`; the new PID. Raises StartupError."""
    try:
        answer = supervision.ask(verb, [child], timeout=timeout or stop_wait() + 60)
    except SupervisionError as exc:
        raise StartupError(str(exc)) from None
    result = answer["results"][child]
    if result["event"] not in ("started", "already_running"):
        raise StartupError(result["detail"] or f"it {result['event']}")
    return int(result["pid"])


def _running(name: str, instance: int) -> int | None:
    """The PID of the healthy daemon running `name`/`instance` here; StartupError if it is hung."""
    status = lock_status(name, instance)
    if status.state == State.HUNG:
        raise StartupError(f"already running (pid {status.pid}) but hung: {hung_reason(status.last_heartbeat)}; "
                           f"restart it with `restartdaemon {name} --kill`")
    if status.state == State.RUNNING and status.pid:
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
    child = _supervised(daemon_cls.name, instance)
    if child is not None:
        # The supervisor stops it gracefully and starts it again as its own child.
        new_pid = _ask_one("restart", child.label, timeout=timeout + 60)
        return Restarted(child.pid, new_pid, False, paths.log)
    outcome = stopping.stop(paths.pid, timeout=timeout, kill=kill)
    if outcome.state == "timeout":
        raise ControlError(f"pid {outcome.pid} did not stop within {timeout:g}s; not restarted (try --kill)")
    lifecycle = Lifecycle.for_daemon(daemon_cls, instance=instance, detach=True, credentials=credentials, paths=paths)
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
    supervisor: bool = False  # stopped through its control socket, with all its children


@dataclass(frozen=True)
class StopReport:
    target: StopTarget
    outcome: stopping.StopOutcome | None  # None: `error` says why it could not be stopped
    error: str = ""
    children: dict[str, str] = field(default_factory=dict)  # a supervisor's: label -> "stopped" | "killed" | ...

    @property
    def killed(self) -> list[str]:
        """What had to be killed: the target itself or its children."""
        own = [self.target.label] if self.outcome is not None and self.outcome.state == "killed" else []
        return own + [child for child, event in self.children.items() if event == "killed"]


def stop_target(name: str, instance: int = 0) -> StopTarget:
    """The target `stopdaemon NAME` stops: through the supervisor if it runs that daemon, else directly."""
    child = _supervised(name, instance)
    if child is not None and child.pid is not None:
        return StopTarget(label(name, instance), RunPaths.for_daemon(name, instance).pid, supervisor=True)
    return StopTarget(label(name, instance), RunPaths.for_daemon(name, instance).pid)


def supervisor_target() -> StopTarget:
    return StopTarget(supervision.NAME, supervision.paths().pid, supervisor=True)


def all_stop_targets() -> list[StopTarget]:
    """What `stopdaemon --all` stops: the supervisor (which stops its children), then every other instance here.

    A daemon the supervisor runs is left to the supervisor: a second SIGTERM from us would
    make it abandon its work in flight. This list is the one place to add another process
    that `--all` must stop.
    """
    children = supervision.children()
    head = [supervisor_target()]
    targets = (stop_target(name, instance) for name in registry.names() for instance in instances(name)
               if not _left_to_supervisor(children.get((name, instance))))
    return [target for target in (*head, *targets) if target.pid_file.exists()]


def _left_to_supervisor(child: supervision.ChildView | None) -> bool:
    return child is not None and (child.pid is not None or child.state in (supervision.ChildState.STARTING,
                                                                         supervision.ChildState.RESTARTING))


def stop_one(target: StopTarget, *, timeout: float, kill: bool) -> StopReport:
    """Stop one target: a daemon directly (`stopping.stop`), a supervisor or its child through the supervisor."""
    if not target.supervisor:
        return StopReport(target, stopping.stop(target.pid_file, timeout=timeout, kill=kill))
    verb, names = ("shutdown", []) if target.label == supervision.NAME else ("stop", [target.label])
    pid = pidfile.read_holder(target.pid_file)
    try:
        # The supervisor gives each child its stop deadline, then kills it: wait that long, and a little more.
        answer = supervision.ask(verb, names, timeout=max(timeout, stop_wait()) + conf.STOP_GRACE)
    except SupervisionError:
        # No control socket answers: a signal stops the supervisor all the same.
        return StopReport(target, stopping.stop(target.pid_file, timeout=timeout, kill=kill))
    children = {child: result["event"] for child, result in answer["results"].items()}
    if verb == "stop":
        event = children[target.label]
        state = {"stopped": "stopped", "killed": "killed"}.get(event, "not_running")
        return StopReport(target, stopping.StopOutcome(state, pid))
    if stopping.wait_unlocked(target.pid_file, timeout):
        return StopReport(target, stopping.StopOutcome("stopped", pid), children=children)
    return StopReport(target, stopping.stop(target.pid_file, timeout=0, kill=kill), children=children)


def stop_many(targets: list[StopTarget], *, timeout: float, kill: bool,
              on_done: Callable[[StopReport], None], on_wait: Callable[[list[StopTarget], float], None],
              every: float = 1.0) -> list[StopReport]:
    """Stop every target at once, each through `stop_one`; return a report per target.

    Each daemon gets SIGTERM (only the process holding its lock), then up to `timeout`
    seconds, then SIGKILL if `kill`; a supervisor stops its children on its own deadline.
    `on_done(report)` is called as each one finishes, in that order; `on_wait(pending,
    elapsed)` every `every` seconds while some are still stopping. Both are called from the
    caller's thread.
    """
    finished: queue.Queue[StopReport] = queue.Queue()

    def stop_in_thread(target: StopTarget) -> None:
        try:
            report = stop_one(target, timeout=timeout, kill=kill)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is reported, never lost in a thread
            report = StopReport(target, None, str(exc))
        finished.put(report)

    for target in targets:
        threading.Thread(target=stop_in_thread, args=(target,), name=f"stop {target.label}", daemon=True).start()
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


# --- the supervisor -------------------------------------------------------------------

@dataclass(frozen=True)
class SupervisorStarted:
    """What `start_supervisor` did: the supervisor's PID (None if none was needed), and per daemon what happened."""

    pid: int | None
    already_running: bool
    started: list[str]
    left_alone: dict[str, int]  # label -> pid: already running, standalone or supervised
    failed: dict[str, str]  # label -> why its first start failed
    log: Path


def start_supervisor(specs: list[ChildSpec], *, detach: bool) -> SupervisorStarted:
    """`rundaemon --all` and `rundaemon NAME1 NAME2 ...`: run what is not running yet under one supervisor.

    A daemon that already runs (standalone or under the running supervisor) is left alone.
    A running supervisor is asked to start those of its children that are stopped. In the
    foreground it runs until stopped and returns then. Raises `StartupError` with one line.
    """
    from daemons.process import supervisor

    log = supervision.paths().log
    left_alone: dict[str, int] = {}
    todo = []
    for spec in specs:
        pid = _running(spec.daemon_cls.name, spec.instance)
        if pid is not None:
            left_alone[spec.label] = pid
        else:
            todo.append(spec)
    running = supervision.running_pid()
    if running is not None:
        children = {c.label: c for c in supervision.children().values()}
        strangers = [spec.label for spec in todo if spec.label not in children]
        if strangers:
            raise StartupError(f"the supervisor (pid {running}) does not run {', '.join(strangers)}; "
                               f"start {'it' if len(strangers) == 1 else 'them'} with `rundaemon NAME --detach`")
        failed: dict[str, str] = {}
        started = []
        for spec in todo:
            try:
                _ask_one("start", spec.label)
                started.append(spec.label)
            except StartupError as exc:
                failed[spec.label] = str(exc)
        return SupervisorStarted(running, True, started, left_alone, failed, log)
    if not todo:
        return SupervisorStarted(None, False, [], left_alone, {}, log)
    lifecycle = supervisor.lifecycle(todo, detach=detach)
    code = lifecycle.run()
    if not detach:
        if code:
            raise StartupError(f"exited with status {code}; see its log")
        return SupervisorStarted(os.getpid(), False, [s.label for s in todo], left_alone, {}, log)
    assert lifecycle.report is not None
    failed = dict(note.split(" ", 1) for note in lifecycle.report.notes if " " in note)
    started = [spec.label for spec in todo if spec.label not in failed]
    return SupervisorStarted(lifecycle.pid, False, started, left_alone, failed, log)


def restart_supervisor(*, timeout: float | None = None, kill: bool = False) -> tuple[StopReport, SupervisorStarted]:
    """`restartdaemon --all`: stop the supervisor with all its children, start it again with the same daemons.

    Raises `ControlError` when no supervisor runs or it did not stop, `StartupError` when it
    could not start again.
    """
    from daemons.process.children import child_specs

    children = supervision.children()
    if not children:
        raise ControlError("no supervisor is running; start one with `rundaemon --all --detach`")
    names = list(dict.fromkeys(name for name, _ in children))
    report = stop_one(supervisor_target(), timeout=stop_wait() if timeout is None else timeout, kill=kill)
    if report.outcome is None or report.outcome.state == "timeout":
        raise ControlError(f"the supervisor did not stop; not restarted{': ' + report.error if report.error else ''}")
    return report, start_supervisor(child_specs(names), detach=True)

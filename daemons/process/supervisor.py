"""`rundaemon --all`: the supervisor's policy: spawn every daemon, restart it, replace it when hung, fan out signals.

The supervisor is a process like any daemon: `daemons.process.lifecycle.Lifecycle` takes its lock,
detaches it, installs its signals, opens its log, reports it ready and releases its files;
`Supervisor.serve` is the only part of its own. Each child is the same daemon that
`rundaemon NAME` runs, forked after Django is loaded once: it takes its own PID file lock,
writes its own log and heartbeat and handles its own signals, so `daemonstatus`,
`stopdaemon NAME` and the health endpoint see no difference. The operator's verbs reach
the supervisor through its control socket (`daemons.process.supervision`).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from django.db import DatabaseError, connections

from daemons import conf
from daemons.cluster import heartbeat
from daemons.process import children, pidfile, supervision
from daemons.process.children import Child, ChildSpec
from daemons.process.exits import Exit
from daemons.process.lifecycle import Lifecycle, Serving, StartupError
from daemons.process.paths import RunPaths
from daemons.process.runner import OUTAGE_BACKOFF_CAP
from daemons.process.supervision import ChildState, SupervisionError

logger = logging.getLogger("daemons.supervisor")

NAME = supervision.NAME
# How often the children's heartbeats are read to find a hung one.
HUNG_CHECK_EVERY = 2.0


class Supervisor:
    """`serve` for the supervisor: forks the children and keeps them running until a stop.

    Policy:
    - a child that dies is restarted with capped exponential backoff (`children.restart_backoff`), as
      long as the supervisor runs; meanwhile it is "restarting", with the reason and next try;
    - a child whose heartbeat is overdue by the rule `daemonstatus` uses is hung: SIGKILLed,
      logged, counted, restarted;
    - a child that exits 0 on its own was stopped by an operator: not restarted until asked;
    - SIGHUP and SIGUSR1 are passed on, and the debug level is given to children started later;
    - a stop (SIGTERM, SIGINT, `shutdown`) sends each child one SIGTERM, waits for their own
      stop deadline plus `conf.STOP_GRACE`, then SIGKILLs what is left.
    The supervisor is ready once every child became ready or failed its first start; the
    notes it reports then name the failed ones.
    """

    forced_exit = False  # the children stop on their own deadline; a second signal changes nothing
    extra_signals: tuple[int, ...] = (signal.SIGCHLD,)
    instance = 0

    def __init__(self, specs: list[ChildSpec], *, log_to_file: bool) -> None:
        self.name = NAME
        self.children = [Child(spec) for spec in specs]
        self.log_to_file = log_to_file
        self.pid = os.getpid()
        self.debug = False
        self._serving: Serving | None = None
        self._settled_reported = False
        self._control: supervision.ControlServer | None = None
        self._stopping = False
        self._next_hung_check = 0.0
        self._db_failed_at: float | None = None

    @property
    def title(self) -> str:
        return f"daemons: supervisor ({', '.join(c.label for c in self.children)})"

    # -- signals: the life cycle's SignalStop calls this from the main loop -----------------------------

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._forward(signal.SIGHUP)
            logger.info("passed SIGHUP on", extra={"action": "logs_reopened"})
        elif signum == signal.SIGUSR1:
            self._forward(signal.SIGUSR1)
            self.debug = logging.getLogger("daemons").getEffectiveLevel() <= logging.DEBUG
            logger.info("passed SIGUSR1 on; children started from now on log at %s",
                        "DEBUG" if self.debug else "INFO", extra={"action": "log_level"})

    # -- the loop -----------------------------------------------------------------------------------------

    def serve(self, serving: Serving) -> int:
        self._serving = serving
        self.pid = os.getpid()
        children.set_title(self.title)
        try:
            self._control = supervision.ControlServer.bind(serving.paths.socket)
        except SupervisionError as exc:
            raise StartupError(str(exc)) from None
        try:
            logger.info("supervisor (pid %d) for %s", self.pid, ", ".join(c.label for c in self.children),
                        extra={"action": "supervising"})
            with children.prepared([child.spec for child in self.children]):
                for child in self.children:
                    self._spawn(child)
            self._loop(serving)
        finally:
            if self._control is not None:
                self._control.close()
                self._control = None
        logger.info("stopped", extra={"action": "stopped"})
        if all(c.first_error for c in self.children):
            return Exit.FAILED
        return Exit.OK

    def _loop(self, serving: Serving) -> None:
        stop, notifier = serving.stop, serving.notifier
        last_watchdog = 0.0
        while True:
            now = time.monotonic()
            if notifier.watchdog_interval and now - last_watchdog >= notifier.watchdog_interval:
                # Every child is alive or being restarted: hung ones are replaced below.
                notifier.watchdog()
                last_watchdog = now
            self._dispatch(stop.poll(self._timeout(now, notifier.watchdog_interval), self._fds()))
            self._reap()
            if stop.is_set() and not self._stopping:
                self._stop_all(serving)
            now = time.monotonic()
            self._kill_late(now)
            if self._stopping:
                if all(c.pid is None for c in self.children):
                    return
                continue
            self._restart_due(now)
            if now >= self._next_hung_check:
                self._next_hung_check = now + HUNG_CHECK_EVERY
                self._replace_hung()
            self._report_settled()

    def _fds(self) -> list[int]:
        """What the loop waits on besides its stop: each starting child's readiness pipe, the control socket."""
        fds = [c.reader.fd for c in self.children if c.reader is not None and c.reader.fd is not None]
        if self._control is not None:
            fds.append(self._control.fileno())
        return fds

    def _dispatch(self, ready: list[int]) -> None:
        for child in self.children:
            if child.reader is not None and child.reader.fd in ready and child.reader.feed():
                self._reported(child)
        if self._control is not None and self._control.fileno() in ready:
            self._accept()

    def _stop_all(self, serving: Serving) -> None:
        self._stopping = True
        logger.info("stopping on signal", extra={"action": "stopping"})
        serving.notifier.stopping()
        for child in self.children:
            self._stop(child, then=None)

    def _timeout(self, now: float, watchdog: float | None) -> float:
        due = [c.restart_at - now for c in self.children if c.restart_at is not None]
        due += [c.stop_deadline - now for c in self.children if c.stop_deadline is not None]
        due.append(self._next_hung_check - now)
        if watchdog:
            due.append(watchdog)
        # Also wake once in a while, so a missed SIGCHLD can't leave a dead child unnoticed.
        return max(0.0, min(due + [1.0]))

    # -- children -------------------------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        pid, reader = children.fork_child(child.spec, parent=self.pid, log_to_file=self.log_to_file, debug=self.debug,
                                          close_inherited=self._close_inherited)
        child.pid, child.reader, child.state = pid, reader, ChildState.STARTING
        child.restart_at, child.started_at, child.killed = None, time.monotonic(), False
        logger.info("%s forked (pid %d)", child.label, pid, extra={"action": "child_started"})

    def _reported(self, child: Child) -> None:
        """The child's readiness pipe reached its end: it said READY (or ERROR, then it exits)."""
        assert child.reader is not None
        report = child.reader.finish()
        child.reader = None
        if report is not None and report.ready and child.state == ChildState.STARTING:
            child.state, child.ever_ready, child.first_attempt_done = ChildState.RUNNING, True, True
            child.reason = ""
            logger.info("%s is ready (pid %s)", child.label, report.pid, extra={"action": "child_ready"})
            self._answer(child, "started", child.pid)
        elif report is not None and not report.ready:
            child.reason = report.error

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is not None:
                self._exited(child, wait_status)

    def _exited(self, child: Child, wait_status: int) -> None:
        if child.reader is not None:
            # The child is gone, so its pipe reaches EOF: read the rest of what it said.
            report = child.reader.finish()
            child.reader = None
            if report is not None and not report.ready:
                child.reason = report.error
        how = children.describe(wait_status)
        old_pid, child.pid, child.stop_deadline = child.pid, None, None
        now = time.monotonic()
        if child.killed:
            pidfile.remove_stale(RunPaths.for_daemon(child.spec.daemon_cls.name, child.spec.instance).pid)
        if child.state == ChildState.STOPPING or self._stopping:
            self._stopped(child, how, old_pid)
            return
        if child.state == ChildState.STARTING:
            why = child.reason or f"it exited during startup ({how})"
            child.reason = why
            if not child.first_attempt_done:
                child.first_attempt_done, child.first_error = True, why
            self._answer(child, "failed", old_pid, why)
        elif os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0:
            child.state, child.reason = ChildState.STOPPED, "stopped on its own (exit 0)"
            logger.info("%s stopped on its own (exit 0); not restarted until rundaemon or restartdaemon asks",
                        child.label, extra={"action": "child_stopped"})
            return
        elif not child.reason.startswith("hung"):
            child.reason = how
        child.failures = 1 if now - child.started_at >= children.BACKOFF_RESET_AFTER else child.failures + 1
        child.restart_at = now + children.restart_backoff(child.failures)
        child.state = ChildState.RESTARTING
        logger.error("%s exited (%s); restarting in %.1f s", child.label, child.reason, child.restart_at - now,
                     extra={"action": "child_restarting", "child": child.label, "reason": child.reason,
                            "next_try": round(child.restart_at - now, 3)})

    def _stopped(self, child: Child, how: str, old_pid: int | None) -> None:
        """A child we told to stop has exited: it stays stopped, or starts again at once after a restart."""
        event = "killed" if child.killed else "stopped"
        logger.info("%s stopped (%s)", child.label, how, extra={"action": "child_stopped"})
        if self._stopping or child.then is None:
            self._answer(child, event, old_pid, how)  # a restart is answered once the new child is ready
            child.state = ChildState.STOPPED
        else:
            child.state = child.then
            if child.then == ChildState.STARTING:
                child.restarts += 1
                self._spawn(child)
        child.then = None

    def _restart_due(self, now: float) -> None:
        for child in self.children:
            if child.state == ChildState.RESTARTING and child.restart_at is not None and child.restart_at <= now:
                child.restarts += 1
                self._spawn(child)

    def _replace_hung(self) -> None:
        """SIGKILL every running child whose heartbeat is overdue by `daemonstatus`'s rule; it is restarted."""
        now = time.monotonic()
        if self._db_failed_at is not None and now - self._db_failed_at < OUTAGE_BACKOFF_CAP:
            # After an outage the children retry on their own backoff: stale heartbeats are no sign of a hang.
            return
        for child in self.children:
            if child.state != ChildState.RUNNING or child.pid is None:
                continue
            try:
                hung = heartbeat.heartbeat_hung(child.spec.daemon_cls.name, child.spec.instance, child.pid)
            except DatabaseError:
                self._db_failed_at = now
                return
            finally:
                connections.close_all()
            if hung:
                child.hung_kills += 1
                child.reason = f"hung: {hung}"
                logger.error("%s is hung (%s); killing it (pid %d)", child.label, hung, child.pid,
                             extra={"action": "child_hung", "child": child.label, "hung_kills": child.hung_kills})
                child.killed = True
                self._signal(child, signal.SIGKILL)

    def _report_settled(self) -> None:
        if self._settled_reported or not all(c.first_attempt_done for c in self.children):
            return
        self._settled_reported = True
        assert self._serving is not None
        failed = {c.label: c.first_error for c in self.children if c.first_error}
        if failed:
            self._serving.notifier.status("failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
        self._serving.notifier.ready()
        self._serving.ready([f"{label} {why}" for label, why in failed.items()])

    def _stop(self, child: Child, then: ChildState | None) -> None:
        """Send the child one SIGTERM (if it runs), with a deadline; `then` is what follows its exit."""
        child.then = then
        if child.pid is None:
            child.state = ChildState.STOPPED if then is None else child.state
            child.restart_at = None if then is None else child.restart_at
            return
        if child.state != ChildState.STOPPING:
            child.state = ChildState.STOPPING
            child.stop_deadline = time.monotonic() + conf.stop_wait()
            self._signal(child, signal.SIGTERM)

    def _kill_late(self, now: float) -> None:
        for child in self.children:
            if child.stop_deadline is not None and now >= child.stop_deadline and child.pid is not None:
                logger.error("%s did not stop in time; killing it", child.label, extra={"action": "child_killed"})
                child.killed, child.stop_deadline = True, None
                self._signal(child, signal.SIGKILL)

    def _signal(self, child: Child, signum: int) -> None:
        if child.pid is not None:
            # Our own unreaped child: its PID can't have been reused.
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    def _forward(self, signum: int) -> None:
        for child in self.children:
            self._signal(child, signum)

    # -- the control socket ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._control is not None
        request = self._control.accept()
        if request is not None:
            self._command(*request)

    def _command(self, conn: socket.socket, verb: str, names: list[str]) -> None:
        now = time.monotonic()
        if verb == "status":
            self._control_reply(conn, {"pid": self.pid, "children": [c.view(now) for c in self.children]})
            return
        if verb == "shutdown":
            targets = list(self.children)
        else:
            by_label = {c.label: c for c in self.children}
            unknown = [name for name in names if name not in by_label]
            if verb not in supervision.VERBS or unknown:
                self._control_reply(conn, {"error": f"unknown verb {verb!r}" if unknown == [] else
                                           f"not supervised here: {', '.join(unknown)}"})
                return
            targets = [by_label[name] for name in names]
        assert self._control is not None
        self._control.wait(conn, {c.label for c in targets})
        logger.info("asked to %s %s", verb, ", ".join(c.label for c in targets) if verb != "shutdown" else "",
                    extra={"action": f"control_{verb}"})
        for child in targets:
            if verb in ("stop", "shutdown"):
                if child.pid is None:
                    child.state, child.restart_at = ChildState.STOPPED, None
                    self._answer(child, "not_running", None)
                else:
                    self._stop(child, then=None)
            elif child.pid is None:  # start or restart of a child that doesn't run
                child.failures = 0
                self._spawn(child)
            elif verb == "start":
                self._answer(child, "already_running", child.pid)
            else:
                self._stop(child, then=ChildState.STARTING)
        if verb == "shutdown":
            assert self._serving is not None
            self._serving.stop.set()

    def _control_reply(self, conn: socket.socket, message: dict[str, Any]) -> None:
        assert self._control is not None
        self._control.reply(conn, message)

    def _answer(self, child: Child, event: str, pid: int | None, detail: str = "") -> None:
        if self._control is not None:
            self._control.answer(child.label, event, pid, detail)

    def _close_inherited(self) -> None:  # pragma: no cover - runs in the child
        if self._control is not None:
            self._control.close_fds()
        assert self._serving is not None
        self._serving.notifier.close()


def pid_path() -> Path:
    return supervision.paths().pid


def log_path() -> Path:
    return supervision.paths().log


def lifecycle(specs: list[ChildSpec], *, detach: bool) -> Lifecycle:
    """The supervisor's life cycle: children log to their files when detached, to stderr in the foreground."""
    return Lifecycle(Supervisor(specs, log_to_file=detach), paths=supervision.paths(), detach=detach)


def run_foreground(specs: list[ChildSpec]) -> int:
    """Run the supervisor in this process, children logging to stderr: the mode for systemd (Type=notify)."""
    return lifecycle(specs, detach=False).run()

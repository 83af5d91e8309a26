"""`rundaemon --all`: load Django once, freeze the heap, fork every daemon, restart it, fan out signals.

Each child is the same daemon `rundaemon NAME` runs: it takes its own PID file lock, writes
its own log and heartbeat and handles its own signals, so `daemonstatus`, `stopdaemon NAME`
and the health endpoint see no difference. What the children share is the memory holding
Django and the project's code, inherited copy-on-write from the supervisor.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connections

from . import conf, logs, registry, stopping
from .base import Daemon
from .notify import Notifier
from .paths import RunPaths
from .pidfile import PidFile, PidFileError

logger = logging.getLogger("daemons.supervisor")

NAME = "supervisor"
# A child that exits before it is ready this many times in a row is given up on.
START_ATTEMPTS = 3
# Restart delays: BACKOFF_BASE, doubling per consecutive failure, capped at BACKOFF_CAP.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
# A child that ran this long before dying starts its backoff afresh.
BACKOFF_RESET_AFTER = 60.0
# Past the children's own stop deadline, the supervisor waits this much longer before SIGKILL.
STOP_GRACE = 2.0
# How often an orphaned child checks its parent when PR_SET_PDEATHSIG is unavailable.
PARENT_POLL = 1.0
PR_SET_PDEATHSIG = 1
EXIT_GAVE_UP = 1


class SupervisorError(Exception):
    """The supervisor could not start; the message is one line for the operator."""


def pid_path() -> Path:
    return conf.run_dir() / f"{NAME}.pid"


def log_path() -> Path:
    return conf.log_dir() / f"{NAME}.log"


@dataclass(frozen=True)
class ChildSpec:
    """One daemon instance the supervisor runs."""

    daemon_cls: type[Daemon]
    instance: int = 0

    @property
    def label(self) -> str:
        return f"{self.daemon_cls.name}.{self.instance}" if self.instance else self.daemon_cls.name


def child_specs(names: list[str] | None = None) -> list[ChildSpec]:
    """The children for `names` (every registered daemon when None), one per configured instance.

    A daemon class runs `instances` copies (default 1), numbered 0, 1, ... Raises
    `registry.UnknownDaemon` for a name that is not registered.
    """
    classes = [registry.get(name) for name in (names if names is not None else registry.names())]
    return [ChildSpec(cls, i) for cls in dict.fromkeys(classes) for i in range(int(getattr(cls, "instances", 1)))]


@dataclass
class Child:
    spec: ChildSpec
    pid: int | None = None
    ready_fd: int | None = None
    message: bytes = b""
    ready: bool = False
    started_at: float = 0.0
    start_failures: int = 0
    crashes: int = 0
    restart_at: float | None = None
    gave_up: str | None = None
    stopped: bool = False  # exited cleanly on its own (stopdaemon NAME): not restarted

    @property
    def settled(self) -> bool:
        """Ready, given up on, or stopped: readiness no longer waits for it."""
        return self.ready or self.gave_up is not None or self.stopped


def backoff(failures: int) -> float:
    """The delay before restart number `failures` (1, 2, ...): doubling from BACKOFF_BASE up to BACKOFF_CAP."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1))


@dataclass
class Settled:
    """What the supervisor reports once every child is ready or given up on."""

    ready: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Supervisor:
    """Forks the children, restarts those that die, passes SIGHUP and SIGUSR1 on, stops them all on SIGTERM.

    `run()` returns the exit code: 0 after a stop on a signal (or when every child
    stopped cleanly on its own), EXIT_GAVE_UP when no child is left to run.
    `on_settled` is called once, when every child is ready or given up on; systemd
    gets READY=1 at the same moment.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)

    def __init__(self, specs: list[ChildSpec], *, log_to_file: bool, own_pidfile: PidFile | None = None,
                 on_settled: Callable[[Settled], None] | None = None, notifier: Notifier | None = None) -> None:
        self.children = [Child(spec) for spec in specs]
        self.log_to_file = log_to_file
        self.own_pidfile = own_pidfile
        self.on_settled = on_settled
        self.notifier = notifier or Notifier()
        self.pid = os.getpid()
        self._pending: set[int] = set()
        self._settled_reported = False
        self._rfd = self._wfd = -1

    # -- signals: handlers only record the signal; the loop acts on it --------------------------------

    def _handle(self, signum: int, frame: object) -> None:
        self._pending.add(signum)

    def _install_handlers(self) -> dict[int, object]:
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        return {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _restore_handlers(self, old: dict[int, object]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(-1)
        os.close(self._rfd)
        os.close(self._wfd)

    # -- the loop -------------------------------------------------------------------------------------

    def run(self) -> int:
        old = self._install_handlers()
        try:
            logger.info("supervisor started (pid %d) for %s", self.pid,
                        ", ".join(c.spec.label for c in self.children), extra={"action": "started"})
            _preload()
            for child in self.children:
                self._spawn(child)
            code = self._loop()
            self._stop_children()
        finally:
            self._restore_handlers(old)
            self.notifier.close()
        logger.info("supervisor stopped", extra={"action": "stopped"})
        return code

    def _loop(self) -> int:
        last_watchdog = 0.0
        while True:
            now = time.monotonic()
            if self.notifier.watchdog_interval and now - last_watchdog >= self.notifier.watchdog_interval:
                self.notifier.watchdog()
                last_watchdog = now
            fds = [self._rfd] + [c.ready_fd for c in self.children if c.ready_fd is not None]
            ready, _, _ = select.select(fds, [], [], self._timeout(now))
            if self._rfd in ready:
                _drain(self._rfd)
            for child in self.children:
                if child.ready_fd is not None and child.ready_fd in ready:
                    self._read_report(child)
            pending, self._pending = self._pending, set()
            if signal.SIGHUP in pending:
                self._forward(signal.SIGHUP)
                logs.reopen_files()
                logger.info("reopened log files and passed SIGHUP on", extra={"action": "logs_reopened"})
            if signal.SIGUSR1 in pending:
                self._forward(signal.SIGUSR1)
                level = logs.toggle_debug()
                logger.warning("log level is now %s; SIGUSR1 passed on", logging.getLevelName(level),
                               extra={"action": "log_level"})
            self._reap()
            if pending & {signal.SIGTERM, signal.SIGINT}:
                logger.info("stopping on signal", extra={"action": "stopping"})
                self.notifier.stopping()
                return 0
            self._restart_due(time.monotonic())
            self._report_settled()
            if all(c.gave_up or c.stopped for c in self.children):
                gave_up = any(c.gave_up for c in self.children)
                if gave_up:
                    logger.error("no daemon left to run; the supervisor exits", extra={"action": "gave_up"})
                return EXIT_GAVE_UP if gave_up else 0

    def _timeout(self, now: float) -> float:
        due = [c.restart_at - now for c in self.children if c.restart_at is not None]
        if self.notifier.watchdog_interval:
            due.append(self.notifier.watchdog_interval)
        # Also wake once in a while, so a missed SIGCHLD can't leave a dead child unnoticed.
        return max(0.0, min(due + [1.0]))

    def _spawn(self, child: Child) -> None:
        connections.close_all()
        sys.stdout.flush()
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        # Objects created since the last freeze join the permanent generation too, so the
        # collector in the child never writes to pages it shares with us.
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured by process tests
            code = 70
            try:
                os.close(read_fd)
                self._become_child(keep=write_fd)
                code = _run_child(child.spec.daemon_cls, child.spec.instance, write_fd, log_to_file=self.log_to_file)
            finally:
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        child.pid, child.ready_fd, child.message = pid, read_fd, b""
        child.ready, child.restart_at, child.started_at = False, None, time.monotonic()
        logger.info("%s forked (pid %d)", child.spec.label, pid, extra={"action": "child_started"})

    def _become_child(self, keep: int) -> None:  # pragma: no cover - runs in the child
        """Turn the fork into a plain daemon process: default signals, none of our fds, no systemd."""
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # Our own process group: a Ctrl-C or a group-wide SIGTERM reaches only the supervisor, which
        # passes one SIGTERM on; a second stop signal would make a child abandon its work.
        os.setpgid(0, 0)
        _die_with_parent(self.pid)
        # Only the supervisor speaks to systemd: a child's READY=1 would be taken for the unit's.
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(var, None)
        # Close what Python objects own through those objects, so a later close can't hit a reused fd.
        for handler in logging.getLogger().handlers[:]:
            handler.close()
            logging.getLogger().removeHandler(handler)
        self.notifier.close()
        if self.own_pidfile is not None:
            self.own_pidfile.forget()
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 20)

    def _read_report(self, child: Child) -> None:
        """Read what the child wrote into its readiness pipe; at EOF, close it and act on it."""
        assert child.ready_fd is not None
        while True:
            try:
                chunk = os.read(child.ready_fd, 4096)
            except BlockingIOError:
                return
            if not chunk:
                break
            child.message += chunk
        os.close(child.ready_fd)
        child.ready_fd = None
        kind, _, detail = child.message.decode("utf-8", "replace").partition(" ")
        if kind == "READY":
            child.ready = True
            child.start_failures = 0
            logger.info("%s is ready (pid %s)", child.spec.label, detail.strip(), extra={"action": "child_ready"})

    def _reaped(self) -> Iterator[tuple[Child, int]]:
        """Each child that exited since the last call, with its wait status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is not None:
                yield child, status

    def _reap(self) -> None:
        for child, status in self._reaped():
            self._exited(child, status)

    def _exited(self, child: Child, status: int) -> None:
        if child.ready_fd is not None:
            # The child is gone, so its pipe reaches EOF: read the rest of what it said.
            os.set_blocking(child.ready_fd, True)
            self._read_report(child)
        child.pid = None
        how = _describe(status)
        label = child.spec.label
        now = time.monotonic()
        if not child.ready:
            child.start_failures += 1
            reason = child.message.decode("utf-8", "replace").partition(" ")[2].strip().splitlines()
            why = reason[0] if reason else f"it exited during startup ({how})"
            if child.start_failures >= START_ATTEMPTS:
                child.gave_up = f"gave up after {child.start_failures} failed starts: {why}"
                logger.error("%s: %s", label, child.gave_up, extra={"action": "child_gave_up"})
                return
            child.restart_at = now + backoff(child.start_failures)
            logger.warning("%s failed to start (%s); retrying in %.1f s", label, why, child.restart_at - now,
                           extra={"action": "child_start_failed"})
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            child.stopped = True
            logger.info("%s stopped on its own (exit 0); not restarted", label, extra={"action": "child_stopped"})
            return
        child.crashes = 1 if now - child.started_at >= BACKOFF_RESET_AFTER else child.crashes + 1
        child.restart_at = now + backoff(child.crashes)
        logger.error("%s died (%s); restarting in %.1f s", label, how, child.restart_at - now,
                     extra={"action": "child_died"})

    def _restart_due(self, now: float) -> None:
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now:
                self._spawn(child)

    def _report_settled(self) -> None:
        if self._settled_reported or not all(c.settled for c in self.children):
            return
        self._settled_reported = True
        result = Settled(ready=[c.spec.label for c in self.children if c.ready],
                         failed={c.spec.label: c.gave_up for c in self.children if c.gave_up})
        if result.failed:
            self.notifier.status("failed: " + "; ".join(f"{k}: {v}" for k, v in result.failed.items()))
        self.notifier.ready()
        if self.on_settled is not None:
            self.on_settled(result)

    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.pid is not None:
                # Our own unreaped child: its PID can't have been reused.
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    def _stop_children(self) -> None:
        """SIGTERM every child; past their stop deadline plus a grace, SIGKILL what is left."""
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + conf.stop_timeout() + STOP_GRACE
        while any(c.pid is not None for c in self.children) and time.monotonic() < deadline:
            select.select([self._rfd], [], [], 0.1)
            _drain(self._rfd)
            for child, status in self._reaped():
                child.pid = None
                logger.info("%s stopped (%s)", child.spec.label, _describe(status), extra={"action": "child_stopped"})
        leftovers = [c for c in self.children if c.pid is not None]
        for child in leftovers:
            logger.error("%s did not stop in time; killing it", child.spec.label, extra={"action": "child_killed"})
        self._forward(signal.SIGKILL)
        for child in leftovers:
            assert child.pid is not None
            os.waitpid(child.pid, 0)
            child.pid = None
            stopping.remove_stale(_child_pid_path(child.spec))
        for child in self.children:
            if child.ready_fd is not None:
                os.close(child.ready_fd)
                child.ready_fd = None


def _child_pid_path(spec: ChildSpec) -> Path:
    return RunPaths.for_daemon(spec.daemon_cls.name, spec.instance).pid


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _preload() -> None:
    """Import in the supervisor what every child would otherwise import for itself, so it is shared.

    Opening a connection loads the database backend; failures are left to the children,
    which report them as their own startup errors.
    """
    from django.db.models.sql import compiler  # noqa: F401  (first imported by a child's first query)

    from . import lifecycle, reporting, runner, wakeup, watch  # noqa: F401

    if getattr(settings, "SENTRY_DSN", ""):
        # Each child starts its own Sentry client (threads don't survive a fork), but the
        # SDK's code, 4 MiB of heap, can be loaded once here and shared.
        import sentry_sdk.integrations.django
        import sentry_sdk.integrations.logging  # noqa: F401

    try:
        connections["default"].ensure_connection()
    except Exception:
        pass
    connections.close_all()


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """Get SIGTERM when the supervisor dies: PR_SET_PDEATHSIG, and a polling thread where that fails."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:
        # The supervisor died before the death signal was armed.
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _one_report(fd: int) -> Callable[[str], None]:
    """A function that writes its first message into the readiness pipe `fd` and closes it; later calls do nothing."""
    def send(text: str) -> None:
        nonlocal fd
        if fd >= 0:
            os.write(fd, text.encode("utf-8", "replace"))
            os.close(fd)
            fd = -1

    return send


def _run_child(daemon_cls: type[Daemon], instance: int, ready_fd: int, *, log_to_file: bool) -> int:
    """Run one daemon in this (forked) process exactly as `rundaemon NAME` would, and return its exit code.

    Writes `READY <pid>` or `ERROR <reason>` into `ready_fd`. This is the one place the
    supervisor calls into the process life cycle.
    """
    from .lifecycle import Lifecycle, StartupError

    send = _one_report(ready_fd)
    code = 1
    try:
        code = Lifecycle(daemon_cls, instance=instance, log_to_file=log_to_file,
                         on_ready=lambda: send(f"READY {os.getpid()}\n")).run()
    except StartupError as exc:
        send(f"ERROR {exc}\n")
    except BaseException as exc:
        send(f"ERROR {type(exc).__name__}: {exc}\n")
        code = 70
    send(f"ERROR the daemon exited during startup with status {code}\n")
    return code


# -- entry points for the commands ---------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """What `start_detached` saw: the supervisor's PID and the children that failed to start."""

    pid: int
    failed: dict[str, str]


def run_foreground(specs: list[ChildSpec]) -> int:
    """Run the supervisor in this process, children logging to stderr: the mode for systemd (Type=notify)."""
    own = PidFile(pid_path())
    own.acquire()
    try:
        own.write()
        logs.configure(NAME, None)
        return Supervisor(specs, log_to_file=False, own_pidfile=own).run()
    finally:
        own.release()


def start_detached(specs: list[ChildSpec]) -> Started:
    """Daemonize the supervisor and return once every child is ready or given up on.

    The supervisor's lock is taken here, before the fork, so "already running" is
    reported by the command the operator ran. Raises `SupervisorError` when the supervisor
    itself could not start.
    """
    own = PidFile(pid_path())
    own.acquire()
    connections.close_all()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the supervisor, measured by process tests
        os.close(read_fd)
        os._exit(_detached_main(specs, own, write_fd))
    os.close(write_fd)
    own.forget()
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode("utf-8", "replace")
    os.waitpid(child, 0)
    first, *rest = message.splitlines() or [""]
    kind, _, detail = first.partition(" ")
    if kind == "READY":
        failed = dict(line.split(" ", 1) for line in rest if " " in line)
        return Started(int(detail), failed)
    if kind == "ERROR":
        raise SupervisorError(detail.strip())
    raise SupervisorError(f"the supervisor exited during startup; see {log_path()}")


def _detached_main(specs: list[ChildSpec], own: PidFile, ready_fd: int) -> int:  # pragma: no cover
    import daemon as python_daemon

    send = _one_report(ready_fd)

    def settled(result: Settled) -> None:
        send(f"READY {os.getpid()}\n" + "".join(f"{label} {why}\n" for label, why in result.failed.items()))

    assert own.fd is not None
    code = 70
    try:
        python_daemon.DaemonContext(working_directory=str(conf.base_dir()), umask=0o027, detach_process=True,
                                    files_preserve=[own.fd, ready_fd], signal_map={}, prevent_core=False).open()
        own.write()
        log_path().parent.mkdir(parents=True, exist_ok=True)
        logs.configure(NAME, log_path())
        code = Supervisor(specs, log_to_file=True, own_pidfile=own, on_settled=settled).run()
    except BaseException as exc:
        logger.critical("supervisor crashed: %s", exc, exc_info=exc, extra={"action": "crashed"})
        send(f"ERROR {type(exc).__name__}: {exc}\n")
    send(f"ERROR the supervisor exited during startup with status {code}; see {log_path()}\n")
    own.release_quietly()
    return code


def supervise(names: list[str], *, every: bool, detach: bool, once: bool = False, instance: int = 0,
              user: str | None = None, group: str | None = None) -> str:
    """`rundaemon --all` and `rundaemon NAME1 NAME2 ...`: run the supervisor; return the line to print.

    Every failure is a `CommandError` with one line: bad options, an unknown name, a
    supervisor already running, or children that failed to start (the supervisor then
    keeps running the others, and the error names the failed ones and why).
    """
    from django.core.management.base import CommandError

    if every and names:
        raise CommandError("give daemon names or --all, not both", returncode=2)
    if not every and not names:
        raise CommandError("name a daemon, several daemons, or use --all", returncode=2)
    if once or instance or user or group:
        raise CommandError("--once, --instance, --user and --group work with a single daemon only", returncode=2)
    try:
        specs = child_specs(names or None)
    except registry.UnknownDaemon as exc:
        raise CommandError(str(exc)) from None
    if not specs:
        raise CommandError("no daemons are registered")
    try:
        if not detach:
            code = run_foreground(specs)
            if code:
                raise CommandError(f"{NAME} exited with status {code}; see its log", returncode=code)
            return f"{NAME} stopped"
        started = start_detached(specs)
    except (PidFileError, SupervisorError) as exc:
        raise CommandError(f"{NAME}: {exc}") from None
    if started.failed:
        failures = "; ".join(f"{label}: {why}" for label, why in started.failed.items())
        raise CommandError(f"{NAME} (pid {started.pid}) runs the others, but {failures}")
    return f"{NAME} started (pid {started.pid}) with {', '.join(s.label for s in specs)}; log: {log_path()}"

"""Running a daemon as a process: foreground or detached, PID lock, logs, signals, readiness."""
from __future__ import annotations

import logging
import os
import select
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, connections

from . import logs, reporting, wakeup
from .base import Daemon
from .pidfile import PidFile, PidFileError
from .runner import Runner

logger = logging.getLogger("daemons.process")


class StartupError(Exception):
    """The daemon could not start; the message is one line for the operator."""


@dataclass(frozen=True)
class RunPaths:
    """Where a daemon instance keeps its PID file, log file and wake-up socket."""

    pid: Path
    log: Path
    socket: Path

    @classmethod
    def for_daemon(cls, name: str, instance: int = 0) -> RunPaths:
        stem = f"{name}.{instance}" if instance else name
        run_dir = Path(settings.DAEMONS_RUN_DIR)
        log_dir = Path(settings.DAEMONS_LOG_DIR)
        return cls(pid=run_dir / f"{stem}.pid", log=log_dir / f"{stem}.log", socket=run_dir / f"{stem}.sock")


class SignalStop:
    """The stop event of a real process, driven by signals and wake-up datagrams.

    Handlers only set flags; `signal.set_wakeup_fd` makes a signal end `wait()` at once.
    SIGHUP (reopen logs) and SIGUSR1 (toggle DEBUG) are acted on inside `wait()`, that is
    in the main loop, never in the handler.
    """

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)

    def __init__(self, wake_socket=None) -> None:
        self._stop = False
        self._pending: set[int] = set()
        self._wake_socket = wake_socket
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}

    def _handle(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop = True
        else:
            self._pending.add(signum)

    def is_set(self) -> bool:
        return self._stop

    def set(self) -> None:
        self._stop = True

    def wait(self, timeout: float | None = None) -> bool:
        if self._stop:
            return True
        fds = [self._rfd] + ([self._wake_socket] if self._wake_socket is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            ready = []
        if self._rfd in ready:
            try:
                while os.read(self._rfd, 512):
                    pass
            except BlockingIOError:
                pass
        if self._wake_socket is not None and self._wake_socket in ready:
            try:
                while self._wake_socket.recv(64):
                    pass
            except BlockingIOError:
                pass
        self._act_on_pending()
        return self._stop

    def _act_on_pending(self) -> None:
        while self._pending:
            signum = self._pending.pop()
            if signum == signal.SIGHUP:
                logs.reopen_files()
                logger.info("reopened log files on SIGHUP", extra={"action": "logs_reopened"})
            elif signum == signal.SIGUSR1:
                level = logs.toggle_debug()
                logger.warning("log level is now %s", logging.getLevelName(level), extra={"action": "log_level"})

    def close(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._rfd)
        os.close(self._wfd)


def check_database() -> None:
    """Make one query, so a daemon never reports ready without a working database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        raise StartupError(f"cannot reach the database: {exc}") from None


def prepare_log(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, logs.LOG_FILE_MODE)
        os.close(fd)
    except OSError as exc:
        raise StartupError(f"cannot open log file {path}: {exc.strerror}") from None


def serve(daemon_cls: type[Daemon], *, paths: RunPaths, log_to_file: bool, once: bool, instance: int,
          on_ready=None) -> int:
    """Everything after the PID lock is held (and after the fork, when detached).

    Sets up logging, Sentry and the database in this process, reports readiness through
    `on_ready`, then runs the loop until a stop. Returns the exit code.
    """
    if log_to_file:
        prepare_log(paths.log)
    logs.configure(daemon_cls.name, paths.log if log_to_file else None)
    reporting.init_sentry(daemon_cls.name)
    check_database()
    daemon = daemon_cls(instance)
    daemon.setup()
    sock = None if once else wakeup.bind(paths.socket)
    stop = SignalStop(wake_socket=sock)
    runner = Runner(daemon, instance=instance)
    log = logging.getLogger(f"daemons.{daemon.name}")
    log.info("started (pid %d)", os.getpid(), extra={"action": "started"})
    if on_ready is not None:
        on_ready()
    try:
        runner.run(stop, once=once)
        runner.write_heartbeat(stopped=True)
    finally:
        stop.close()
        if sock is not None:
            sock.close()
            try:
                os.unlink(paths.socket)
            except FileNotFoundError:
                pass
        daemon.teardown()
        connections.close_all()
    log.info("stopped", extra={"action": "stopped"})
    reporting.flush()
    return 0


def run_foreground(daemon_cls: type[Daemon], *, paths: RunPaths, once: bool = False, instance: int = 0) -> int:
    """Run in this process, logging to stderr: the mode for systemd, supervisord and containers."""
    pidfile = PidFile(paths.pid)
    pidfile.acquire()
    try:
        pidfile.write()
        return serve(daemon_cls, paths=paths, log_to_file=False, once=once, instance=instance)
    finally:
        pidfile.release()


def run_detached(daemon_cls: type[Daemon], *, paths: RunPaths, instance: int = 0) -> int:
    """Daemonize with python-daemon and return once the daemon is really up.

    The PID lock is taken here, before the fork, so a conflict is reported by the command
    the operator ran. The daemon reports through a pipe when it holds the lock and has
    reached the database; only then does this return its PID. A startup failure in the
    daemon comes back through the same pipe as `StartupError`.
    """
    pidfile = PidFile(paths.pid)
    pidfile.acquire()
    # Nothing the daemon needs may be open across the fork: DB connections are opened
    # again in the daemon.
    connections.close_all()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon, measured by process tests
        os.close(read_fd)
        os._exit(_daemon_main(daemon_cls, paths=paths, pidfile=pidfile, ready_fd=write_fd, instance=instance))
    os.close(write_fd)
    # The daemon holds the lock through its inherited descriptor; ours must only be closed.
    assert pidfile.fd is not None
    os.close(pidfile.fd)
    pidfile.fd = None
    message = _read_all(read_fd)
    os.waitpid(child, 0)
    kind, _, detail = message.partition(" ")
    if kind == "READY":
        return int(detail)
    if kind == "ERROR":
        raise StartupError(detail.strip())
    raise StartupError(f"the daemon exited during startup; see {paths.log}")


def _read_all(fd: int) -> str:
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _daemon_main(daemon_cls: type[Daemon], *, paths: RunPaths, pidfile: PidFile, ready_fd: int,
                 instance: int) -> int:  # pragma: no cover - runs in the daemon
    import daemon as python_daemon

    def send(line: str) -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            os.write(ready_fd, line.encode("utf-8", "replace"))
            os.close(ready_fd)
            ready_fd = -1

    assert pidfile.fd is not None
    try:
        context = python_daemon.DaemonContext(
            working_directory=str(settings.BASE_DIR),
            umask=0o027,
            detach_process=True,
            files_preserve=[pidfile.fd, ready_fd],
            signal_map={},
            prevent_core=False,
        )
        context.open()
        pidfile.write()
        code = serve(daemon_cls, paths=paths, log_to_file=True, once=False, instance=instance,
                     on_ready=lambda: send(f"READY {os.getpid()}\n"))
    except (StartupError, PidFileError) as exc:
        send(f"ERROR {exc}\n")
        code = 1
    except BaseException as exc:
        logging.getLogger(f"daemons.{daemon_cls.name}").critical("daemon crashed", exc_info=True)
        reporting.capture(exc, daemon=daemon_cls.name)
        reporting.flush()
        send(f"ERROR {type(exc).__name__}: {exc}\n")
        code = 1
    pidfile.release()
    return code

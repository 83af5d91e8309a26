"""Running a daemon as a process: foreground or detached, PID lock, logs, signals, readiness."""
from __future__ import annotations

import grp
import logging
import os
import pwd
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, connections

from . import logs, reporting, wakeup
from .base import Daemon
from .notify import Notifier
from .pidfile import PidFile, PidFileError
from .runner import Runner
from .watch import Watch

logger = logging.getLogger("daemons.process")

EXIT_ABANDONED = 1
EXIT_FORCED = 2
EXIT_CRASHED = 70  # EX_SOFTWARE


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


@dataclass(frozen=True)
class Credentials:
    """The user and group a daemon started as root runs as."""

    user: str
    uid: int
    gid: int

    @classmethod
    def resolve(cls, user: str | None, group: str | None) -> Credentials | None:
        """Look up `user`/`group`; None when neither is given. Raises StartupError."""
        if user is None and group is None:
            return None
        if os.geteuid() != 0:
            raise StartupError(f"--user/--group need root; this process runs as uid {os.geteuid()}")
        try:
            entry = pwd.getpwnam(user) if user is not None else pwd.getpwuid(0)
        except KeyError:
            raise StartupError(f"unknown user {user!r}") from None
        gid = entry.pw_gid
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise StartupError(f"unknown group {group!r}") from None
        return cls(entry.pw_name, entry.pw_uid, gid)

    def apply(self) -> None:
        """Drop to these credentials for good; a failed drop is a failed start."""
        try:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)
        except OSError as exc:
            raise StartupError(f"cannot drop privileges to {self.user}: {exc.strerror}") from None
        if self.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:
                raise StartupError(f"dropping privileges to {self.user} did not stick")
        if os.getuid() != self.uid or os.geteuid() != self.uid or os.getegid() != self.gid:
            raise StartupError(f"dropping privileges to {self.user} did not stick")


class SignalStop:
    """The stop event of a real process, driven by signals and wake-up datagrams.

    Handlers only set flags; `signal.set_wakeup_fd` makes a signal end `wait()` at once.
    SIGHUP (reopen logs) and SIGUSR1 (toggle DEBUG) are acted on inside `wait()`, that is
    in the main loop, never in the handler. A second SIGTERM or SIGINT during a graceful
    stop calls `force_exit`, the one thing a handler does beyond setting a flag.
    """

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)

    def __init__(self, wake_socket=None, force_exit: Callable[[], None] | None = None) -> None:
        self.stop_requested_at: float | None = None
        self._pending: set[int] = set()
        self._woken = False
        self._wake_socket = wake_socket
        self._force_exit = force_exit
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}

    def _handle(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stop_requested_at is not None and self._force_exit is not None:
                self._force_exit()
            self.stop_requested_at = self.stop_requested_at or time.monotonic()
        else:
            self._pending.add(signum)

    def is_set(self) -> bool:
        return self.stop_requested_at is not None

    def set(self) -> None:
        self.stop_requested_at = self.stop_requested_at or time.monotonic()

    def attach(self, wake_socket) -> None:
        """Also end `wait()` when a datagram arrives on `wake_socket`."""
        self._wake_socket = wake_socket

    def consume_wakeup(self) -> bool:
        woken, self._woken = self._woken, False
        return woken

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        fds = [self._rfd] + ([self._wake_socket] if self._wake_socket is not None else [])
        ready, _, _ = select.select(fds, [], [], timeout)
        if self._rfd in ready:
            _drain(lambda: os.read(self._rfd, 512))
        if self._wake_socket is not None and self._wake_socket in ready:
            _drain(lambda: self._wake_socket.recv(64))
            self._woken = True
        self._act_on_pending()
        return self.is_set()

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


def _drain(read: Callable[[], bytes]) -> None:
    try:
        while read():
            pass
    except BlockingIOError:
        pass


def check_database() -> None:
    """Make one query, so a daemon never reports ready without a working database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        raise StartupError(f"cannot reach the database: {exc}") from None


def prepare_log(path: Path, owner: Credentials | None) -> None:
    """Create the log directory and file (0640), owned by the user the daemon will run as."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, logs.LOG_FILE_MODE)
        try:
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StartupError(f"cannot open log file {path}: {exc.strerror}") from None


def stop_timeout() -> float:
    return float(getattr(settings, "DAEMONS_STOP_TIMEOUT", 8.0))


def serve(daemon_cls: type[Daemon], *, paths: RunPaths, pidfile: PidFile, log_to_file: bool, once: bool,
          instance: int, credentials: Credentials | None = None, on_ready: Callable[[], None] | None = None) -> int:
    """Everything after the PID lock is held (and after the fork, when detached).

    Opens the log, binds the wake-up socket, drops privileges, starts Sentry, checks the
    database, then reports readiness (`on_ready`, and READY=1 to systemd) and runs the
    loop until a stop. Startup failures raise `StartupError`; a crash after that is
    logged with its traceback and reported, and gives a non-zero exit code.
    """
    def force_exit() -> None:
        pidfile.release_quietly()
        os._exit(EXIT_FORCED)

    # Handlers first: from the moment the PID file names us, a stop must be a clean stop.
    stop = SignalStop(force_exit=force_exit)
    sock = None
    try:
        pidfile.write()
        if log_to_file:
            prepare_log(paths.log, credentials)
        logs.configure(daemon_cls.name, paths.log if log_to_file else None)
        log = logging.getLogger(f"daemons.{daemon_cls.name}")
        if not once:
            sock = wakeup.bind(paths.socket, owner=(credentials.uid, credentials.gid) if credentials else None)
            stop.attach(sock)
        if credentials is not None:
            credentials.apply()
        reporting.init_sentry(daemon_cls.name)
        check_database()
    except BaseException:
        _close_events(stop, sock, paths.socket)
        raise
    try:
        notifier = Notifier()
        daemon = daemon_cls(instance)
        try:
            daemon.setup()
        except Exception as exc:
            raise StartupError(f"setup failed: {type(exc).__name__}: {exc}") from exc
        runner = Runner(daemon, instance=instance, notifier=notifier)
        timeout = stop_timeout()

        def abandon(what: str) -> None:
            log.error("stop deadline of %g s passed; abandoning %s", timeout, what, extra={"action": "stop_abandoned"})
            reporting.flush()
            pidfile.release_quietly()
            os._exit(EXIT_ABANDONED)

        watch = Watch(runner, stop_requested_at=lambda: stop.stop_requested_at, stop_timeout=timeout, abandon=abandon)
        log.info("started (pid %d)", os.getpid(), extra={"action": "started"})
        notifier.ready()
        if on_ready is not None:
            on_ready()
        watch.start()
        try:
            if not stop.is_set():
                runner.run(stop, once=once)
            if stop.is_set():
                notifier.stopping()
                log.info("stopping on signal", extra={"action": "stopping"})
            daemon.teardown()
            runner.write_heartbeat(stopped=True)
        finally:
            watch.finish()
            notifier.close()
    except StartupError:
        raise
    except BaseException as exc:
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        log.critical("daemon crashed: %s", exc, exc_info=exc, extra={"action": "crashed"})
        reporting.capture(exc, daemon=daemon_cls.name, kind="crash")
        reporting.flush()
        return EXIT_CRASHED
    finally:
        _close_events(stop, sock, paths.socket)
        connections.close_all()
    log.info("stopped", extra={"action": "stopped"})
    reporting.flush()
    return 0


def _close_events(stop: SignalStop, sock, socket_path: Path) -> None:
    stop.close()
    if sock is not None:
        sock.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass


def run_foreground(daemon_cls: type[Daemon], *, paths: RunPaths, once: bool = False, instance: int = 0,
                   credentials: Credentials | None = None) -> int:
    """Run in this process, logging to stderr: the mode for systemd, supervisord and containers."""
    pidfile = PidFile(paths.pid)
    pidfile.acquire()
    try:
        return serve(daemon_cls, paths=paths, pidfile=pidfile, log_to_file=False, once=once, instance=instance,
                     credentials=credentials)
    finally:
        pidfile.release()


def run_detached(daemon_cls: type[Daemon], *, paths: RunPaths, instance: int = 0,
                 credentials: Credentials | None = None) -> int:
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
        os._exit(_daemon_main(daemon_cls, paths=paths, pidfile=pidfile, ready_fd=write_fd, instance=instance,
                              credentials=credentials))
    os.close(write_fd)
    # The daemon holds the lock through its inherited descriptor; ours must only be closed.
    pidfile.forget()
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


def _daemon_main(daemon_cls: type[Daemon], *, paths: RunPaths, pidfile: PidFile, ready_fd: int, instance: int,
                 credentials: Credentials | None) -> int:  # pragma: no cover - runs in the daemon
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
        code = serve(daemon_cls, paths=paths, pidfile=pidfile, log_to_file=True, once=False, instance=instance,
                     credentials=credentials, on_ready=lambda: send(f"READY {os.getpid()}\n"))
    except (StartupError, PidFileError) as exc:
        send(f"ERROR {exc}\n")
        code = 1
    except BaseException as exc:
        send(f"ERROR {type(exc).__name__}: {exc}\n")
        code = EXIT_CRASHED
    send(f"ERROR the daemon exited during startup with status {code}; see {paths.log}\n")
    pidfile.release_quietly()
    return code

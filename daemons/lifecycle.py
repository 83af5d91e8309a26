"""One owner of a daemon process: lock, detach, signals, logs, privileges, setup, loop, teardown, release.

Read `Lifecycle.run()` top to bottom to see a daemon's whole life. The entry point for
anything that runs a daemon (the `rundaemon` command, a supervisor's forked child, a
test) is:

    code = Lifecycle(daemon_cls, instance=0, detach=False, once=False, log_to_file=True,
                     credentials=None, on_ready=callable).run()

- `detach=True` forks a python-daemon and returns 0 in the caller once the daemon is
  ready (its PID is then in `lifecycle.pid`); a failed start raises `StartupError`.
- Otherwise the daemon runs in *this* process until it stops, and `run()` returns its
  exit code: 0 after a clean stop, `EXIT_CRASHED` after a crash, `EXIT_TICK_FAILED` when
  the one tick of `once=True` raised. A process that has already forked (a supervisor's
  child) calls it this way, with Django loaded once in the parent.
- `on_ready()` is called once the daemon holds its lock, reached the database and set up,
  right before the first tick; systemd gets READY=1 at the same moment.
- `log_to_file` sends the daemon's log to DAEMONS_LOG_DIR/<name>.log instead of stderr.
- `credentials` (see `privileges.Credentials`) drops root after the files are opened.

Startup failures raise `StartupError` with one line for the operator; nothing is left
behind (no PID file, no socket, the caller's signal handlers restored).
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable

from django.db import DatabaseError, connection, connections

from . import checks, conf, detach, heartbeat, listen, logs, reporting, signals, wakeup
from .base import Control, Daemon, TickResult
from .notify import Notifier
from .paths import RunPaths
from .pidfile import PidFile, PidFileError
from .privileges import Credentials, PrivilegeError
from .runner import Runner
from .watch import Watch

EXIT_ABANDONED = 1
EXIT_FORCED = 2
EXIT_TICK_FAILED = 1
EXIT_CRASHED = detach.EXIT_CRASHED


class StartupError(Exception):
    """The daemon could not start; the message is one line for the operator."""


class Lifecycle:
    """Owns one daemon process from its PID lock to the release of that lock (see the module docstring)."""

    def __init__(self, daemon_cls: type[Daemon], *, instance: int = 0, detach: bool = False, once: bool = False,
                 log_to_file: bool | None = None, credentials: Credentials | None = None,
                 on_ready: Callable[[], None] | None = None, paths: RunPaths | None = None) -> None:
        self.daemon_cls = daemon_cls
        self.instance = instance
        self.detach = detach
        self.once = once
        self.log_to_file = detach if log_to_file is None else log_to_file
        self.credentials = credentials
        self.on_ready = on_ready
        self.paths = paths or RunPaths.for_daemon(daemon_cls.name, instance)
        self.log = logging.getLogger(f"daemons.{daemon_cls.name}")
        self.pidfile = PidFile(self.paths.pid)
        self.pid: int | None = None  # the daemon's PID, once it runs
        self.last_result_line = ""  # what the last tick did, for --once

    # --- the life, top to bottom ------------------------------------------------------

    def run(self) -> int:
        """Run the daemon (see the module docstring); return its exit code. Raises StartupError."""
        if self.detach:
            try:
                self.pid = detach.start(self._run_detached, log_path=self.paths.log)
            except detach.DetachError as exc:
                raise StartupError(str(exc)) from None
            return 0
        return self._live()

    def _run_detached(self, readiness: detach.Readiness) -> int:  # pragma: no cover - in the daemon
        on_ready = self.on_ready

        def ready() -> None:
            readiness.ready()
            if on_ready:
                on_ready()

        self.on_ready = ready
        try:
            return self._live()
        except StartupError as exc:
            readiness.failed(str(exc))
            return 1

    def _live(self) -> int:
        """Everything in the daemon's own process, with one exit path that releases the PID file."""
        self.pid = os.getpid()
        # Handlers first: from the moment the PID file names us, a stop must be a clean stop.
        with signals.installed(force_exit=lambda: self._exit_now(EXIT_FORCED)) as stop:
            try:
                # Lock and write our PID in one step, in the process the PID names: nobody
                # sees the lock held for long by a file that names somebody else or nobody.
                self.pidfile.acquire()
                self.pidfile.write()
            except PidFileError as exc:
                raise StartupError(str(exc)) from None
            try:
                return self._serve(stop)
            finally:
                self.pidfile.release_quietly()

    def _serve(self, stop: signals.SignalStop) -> int:
        sock = listener = None
        try:
            self._open_logs()
            if not self.once:
                sock = self._bind_wake_socket()
                stop.attach(sock)
            self._drop_privileges()
            reporting.init_sentry(self.daemon_cls.name)
            self._check_database()
            self._refuse_twin()
            if not self.once:
                # Before the first tick, so a signup committed after that tick's claim pass still wakes us.
                listener = listen.for_daemon(self.daemon_cls.name)
                stop.attach_listener(listener)
            daemon = self.daemon_cls(self.instance, Control(stop))
            self._adopt_logger(daemon)
            stop.debug_loggers.append(daemon.logger.name)
            self._setup(daemon)
            return self._loop(daemon, stop)
        finally:
            if listener is not None:
                listener.close()
            if sock is not None:
                sock.close()
                try:
                    os.unlink(self.paths.socket)
                except OSError:
                    pass
            connections.close_all()

    def _loop(self, daemon: Daemon, stop: signals.SignalStop) -> int:
        """Ready, then tick until a stop, then teardown. A crash is logged, reported and an exit code."""
        notifier = Notifier()
        runner = Runner(daemon, instance=self.instance, notifier=notifier)
        timeout = conf.stop_timeout()

        def abandon(what: str) -> None:
            self.log.error("stop deadline of %g s passed; abandoning %s", timeout, what,
                           extra={"action": "stop_abandoned"})
            self._exit_now(EXIT_ABANDONED)

        watch = Watch(runner, stop_requested_at=lambda: stop.stop_requested_at, stop_timeout=timeout, abandon=abandon)
        stop.on_stop = watch.poke
        try:
            self.log.info("started", extra={"action": "started"})
            notifier.ready()
            if self.on_ready is not None:
                self.on_ready()
            watch.start()
            try:
                code = 0
                if not stop.is_set():
                    result = runner.run(stop, once=self.once)
                    if self.once:
                        code = self._once_outcome(runner, result)
                if stop.is_set():
                    notifier.stopping()
                    self.log.info("stopping on signal", extra={"action": "stopping"})
                daemon.teardown()
                runner.write_heartbeat(stopped=True)
            finally:
                stop.on_stop = None
                watch.finish()
                notifier.close()
        except BaseException as exc:
            if isinstance(exc, SystemExit) and not exc.code:
                raise
            self.log.critical("daemon crashed: %s", exc, exc_info=exc, extra={"action": "crashed"})
            reporting.capture(exc, daemon=self.daemon_cls.name, kind="crash")
            reporting.flush()
            return EXIT_CRASHED
        self.log.info("stopped", extra={"action": "stopped"})
        reporting.flush()
        return code

    # --- the steps ----------------------------------------------------------------------

    def _open_logs(self) -> None:
        """Create the log file for the user the daemon will run as, then add the daemon's handler."""
        if self.log_to_file:
            owner = (self.credentials.uid, self.credentials.gid) if self.credentials is not None else None
            try:
                self.paths.log.parent.mkdir(parents=True, exist_ok=True)
                os.close(logs.open_log(self.paths.log, owner=owner))
            except OSError as exc:
                raise StartupError(f"cannot open log file {self.paths.log}: {exc.strerror}") from None
            except logs.LogFileError as exc:
                raise StartupError(str(exc)) from None
        logs.configure(self.daemon_cls.name, self.paths.log if self.log_to_file else None, instance=self.instance)

    def _adopt_logger(self, daemon: Daemon) -> None:
        """The daemon's own logger logs at the framework's level unless the project set one for it."""
        if daemon.logger.level == logging.NOTSET:
            daemon.logger.setLevel(logging.getLogger("daemons").getEffectiveLevel())

    def _bind_wake_socket(self):
        sock = wakeup.bind(self.paths.socket)
        if sock is not None and self.credentials is not None:
            try:
                self.credentials.hand_over(self.paths.socket, stat.S_IFSOCK)
            except PrivilegeError as exc:
                sock.close()
                raise StartupError(str(exc)) from None
        return sock

    def _drop_privileges(self) -> None:
        if self.credentials is not None:
            try:
                self.credentials.apply()
            except PrivilegeError as exc:
                raise StartupError(str(exc)) from None

    def _check_database(self) -> None:
        """Make one query, so a daemon never reports ready without a working database."""
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            raise StartupError(checks.database_problem(exc)) from None

    def _refuse_twin(self) -> None:
        """Refuse to run beside a live twin on this host whose PID file is in another run directory."""
        try:
            twin = heartbeat.live_duplicate(self.daemon_cls.name, self.instance)
        except DatabaseError as exc:
            raise StartupError(checks.database_problem(exc)) from None
        if twin is not None:
            raise StartupError(f"already running on this host (pid {twin}), with its PID file in another run "
                               f"directory than {self.paths.pid.parent}")

    def _setup(self, daemon: Daemon) -> None:
        try:
            daemon.setup()
        except Exception as exc:
            raise StartupError(f"setup failed: {type(exc).__name__}: {exc}") from exc

    def _once_outcome(self, runner: Runner, result: TickResult | None) -> int:
        """The exit code of `--once` (EXIT_TICK_FAILED if the tick raised), and its one line in `last_result_line`."""
        counters = runner.counters
        if counters.last_outcome == "error":
            error = counters.last_error.splitlines()[-1] if counters.last_error else "unknown error"
            self.last_result_line = f"tick failed after {counters.last_duration_ms} ms: {error}"
            return EXIT_TICK_FAILED
        if result is None or result.idle:
            self.last_result_line = f"idle tick in {counters.last_duration_ms} ms"
        else:
            what = result.summary or f"processed {result.processed}"
            self.last_result_line = f"{what} in {counters.last_duration_ms} ms"
        return 0

    def _exit_now(self, code: int) -> None:
        """The emergency exit (a second SIGTERM, a passed stop deadline): release the PID file, end now."""
        reporting.flush()
        self.pidfile.release_quietly()
        os._exit(code)

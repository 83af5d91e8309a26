"""One owner of a process's life, daemon or supervisor: lock, detach, signals, logs, ready, serve, release.

Read `Lifecycle.run()` top to bottom to see the whole life; only `serve` differs between
the kinds of process:

- `DaemonService` (below) serves one daemon: its wake-up socket, privileges, database
  check, setup, then the tick loop until a stop, then teardown.
- `daemons.process.supervisor.Supervisor` serves the supervisor: it forks the daemons, restarts
  them, replaces hung ones and passes signals on. Each of its children runs this same
  life cycle, without the detach.

The entry points:

    Lifecycle.for_daemon(daemon_cls, instance=0, detach=False, once=False).run()
    Lifecycle(Supervisor(specs), paths=RunPaths.for_daemon("supervisor"), detach=True).run()

- The PID lock is taken first, in the calling process: "already running" is the error of
  the command the operator ran, and nobody can start a twin while this one detaches.
- `detach=True` forks a python-daemon (`daemons.process.daemonize`) that keeps the lock, and
  returns `Exit.OK` in the caller once the process reported ready (its PID is then in
  `lifecycle.pid`, what it said in `lifecycle.report`); a failed start raises `StartupError`.
- Otherwise the process runs in *this* process until it stops, and `run()` returns its
  exit code (`daemons.process.exits.Exit`). A supervisor's forked child calls it this way and
  passes the `readiness` pipe its supervisor reads.
- "ready" is reported once the process holds its lock, logs, and (a daemon) reached the
  database and set up, right before the first tick: to systemd (READY=1) and to the
  readiness pipe.
- Every object is handed its collaborators when it is built, never patched afterwards:
  the signal handlers in `Lifecycle._signalled`, a daemon's graph in `DaemonService.wire`.

Startup failures raise `StartupError` with one line for the operator (or, with a
readiness pipe, send it there); nothing is left behind: no PID file, no socket, the
caller's signal handlers restored.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.db import DatabaseError, connection, connections

from daemons import checks, conf
from daemons.cluster import heartbeat, listen, wakeup
from daemons.daemon import Control, Daemon, TickResult
from daemons.process import daemonize, logs, reporting, signals
from daemons.process.exits import Exit, Outcome
from daemons.process.notify import Notifier
from daemons.process.paths import RunPaths
from daemons.process.pidfile import PidFile, PidFileError
from daemons.process.privileges import Credentials, PrivilegeError
from daemons.process.readiness import Readiness, Report

if TYPE_CHECKING:
    from daemons.process.runner import Runner
    from daemons.process.watch import Watch


class StartupError(Exception):
    """The process could not start; the message is one line for the operator."""


@dataclass
class Serving:
    """What the life cycle hands to `serve`: the stop event and the ways to report and to end."""

    stop: signals.SignalStop
    bell: signals.SelfPipe  # rung by a stop signal's handler: a daemon's watch thread sleeps on it
    notifier: Notifier
    paths: RunPaths
    credentials: Credentials | None
    ready: Callable[[list[str]], None]  # call once, right before the work starts; the notes go to the reader
    exit_now: Callable[[int], None]  # the emergency exit: release the PID file and the socket, end now


class Service(Protocol):
    """What a kind of process brings to the life cycle: its name and its `serve`."""

    name: str
    instance: int
    forced_exit: bool  # a second stop signal ends the process at once
    extra_signals: tuple[int, ...]

    def on_signal(self, signum: int) -> None: ...

    def serve(self, serving: Serving) -> int:
        """Run until stopped; return the exit code. Raise `StartupError` before calling `ready`."""
        ...


class Lifecycle:
    """Owns one process from its PID lock to the release of that lock (see the module docstring)."""

    def __init__(self, service: Service, *, paths: RunPaths, detach: bool = False, log_to_file: bool | None = None,
                 credentials: Credentials | None = None, readiness: Readiness | None = None,
                 debug: bool = False) -> None:
        self.service = service
        self.paths = paths
        self.detach = detach
        self.log_to_file = detach if log_to_file is None else log_to_file
        self.credentials = credentials
        self.readiness = readiness  # a supervisor's child reports to its supervisor through it
        self.debug = debug  # start at DEBUG: a supervisor's debug toggle, passed on to a child it starts
        self.log = logging.getLogger(f"daemons.{service.name}")
        self.pidfile = PidFile(paths.pid)
        self.pid: int | None = None  # the process's PID, once it runs
        self.report: Report | None = None  # what a detached process said when it became ready

    @classmethod
    def for_daemon(cls, daemon_cls: type[Daemon], *, instance: int = 0, detach: bool = False, once: bool = False,
                   log_to_file: bool | None = None, credentials: Credentials | None = None,
                   readiness: Readiness | None = None, paths: RunPaths | None = None,
                   debug: bool = False) -> Lifecycle:
        """The life cycle of daemon `daemon_cls`, instance `instance`, with its own files."""
        return cls(DaemonService(daemon_cls, instance, once=once),
                   paths=paths or RunPaths.for_daemon(daemon_cls.name, instance), detach=detach,
                   log_to_file=log_to_file, credentials=credentials, readiness=readiness, debug=debug)

    # --- the life, top to bottom ------------------------------------------------------

    def run(self) -> int:
        """Run the process (see the module docstring); return its exit code. Raises StartupError."""
        self._lock()
        if not self.detach:
            return self._live(self.readiness)
        try:
            self.report = daemonize.start(self._live, keep=[self.pidfile.fd] if self.pidfile.fd else [],
                                          log_path=self.paths.log)
        except daemonize.DetachError as exc:
            # Our descriptor shares the lock with the process that died: the file is still ours to remove,
            # so a start that failed leaves nothing behind, even when the process was killed before a word.
            self.pidfile.release_quietly()
            raise StartupError(str(exc)) from None
        self.pidfile.forget()  # the detached process holds the lock now
        self.pid = self.report.pid
        return Exit.OK

    def _lock(self) -> None:
        try:
            self.pidfile.acquire()
        except PidFileError as exc:
            raise StartupError(str(exc)) from None

    def _live(self, readiness: Readiness | None) -> int:
        """Everything in the process's own life, with one exit path that releases the PID file."""
        try:
            return self._signalled(readiness)
        except StartupError as exc:
            if readiness is None:
                raise
            readiness.failed(str(exc))
            return Exit.FAILED

    def _signalled(self, readiness: Readiness | None) -> int:
        self.pid = os.getpid()
        service = self.service
        force_exit = (lambda: self.exit_now(Exit.FORCED)) if service.forced_exit else None

        def ready(notes: list[str]) -> None:
            self.log.info("started", extra={"action": "started"})
            if readiness is not None:
                readiness.ready(notes)

        # Handlers first: from the moment the PID file names us, a stop must be a clean stop. The
        # bell outlives them (closed last), since a handler may ring it until they are restored.
        with signals.SelfPipe() as bell, signals.installed(force_exit, extra=service.extra_signals,
                                                           on_signal=service.on_signal, on_stop=bell.ring) as stop:
            try:
                try:
                    self.pidfile.write()
                except OSError as exc:
                    raise StartupError(f"cannot write PID file {self.paths.pid}: {exc.strerror}") from None
                self._open_logs()
                notifier = Notifier()
                serving = Serving(stop, bell, notifier, self.paths, self.credentials, ready, self.exit_now)
                try:
                    return self._serve(serving)
                finally:
                    notifier.close()
            finally:
                self.pidfile.release_quietly()

    def _serve(self, serving: Serving) -> int:
        """`serve`, with the one crash path: logged, reported, `Exit.CRASHED`."""
        try:
            code = self.service.serve(serving)
        except StartupError:
            raise
        except BaseException as exc:
            if isinstance(exc, SystemExit) and not exc.code:
                raise
            self.log.critical("%s crashed: %s", self.service.name, exc, exc_info=exc, extra={"action": "crashed"})
            reporting.capture(exc, daemon=self.service.name, kind="crash")
            reporting.flush()
            return Exit.CRASHED
        reporting.flush()
        return code

    # --- the steps ----------------------------------------------------------------------

    def _open_logs(self) -> None:
        """Create the log file for the user the process will run as, then add the process's handler."""
        if self.log_to_file:
            owner = (self.credentials.uid, self.credentials.gid) if self.credentials is not None else None
            try:
                self.paths.log.parent.mkdir(parents=True, exist_ok=True)
                os.close(logs.open_log(self.paths.log, owner=owner))
            except OSError as exc:
                raise StartupError(f"cannot open log file {self.paths.log}: {exc.strerror}") from None
            except logs.LogFileError as exc:
                raise StartupError(str(exc)) from None
        logs.configure(self.service.name, self.paths.log if self.log_to_file else None,
                       instance=self.service.instance)
        if self.debug:
            logging.getLogger("daemons").setLevel(logging.DEBUG)

    def exit_now(self, code: int) -> None:
        """The emergency exit (a second SIGTERM, a passed stop deadline): release our files, end now."""
        reporting.flush()
        self.pidfile.release_quietly()
        _unlink_socket(self.paths.socket)
        os._exit(code)


def _unlink_socket(path: os.PathLike[str]) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class DaemonService:
    """`serve` for one daemon: wake-up socket, privileges, database, setup, the tick loop, teardown."""

    forced_exit = True
    extra_signals: tuple[int, ...] = ()

    def __init__(self, daemon_cls: type[Daemon], instance: int = 0, *, once: bool = False) -> None:
        self.daemon_cls = daemon_cls
        self.name = daemon_cls.name
        self.instance = instance
        self.once = once
        self.log = logging.getLogger(f"daemons.{daemon_cls.name}")
        self.last_result_line = ""  # what the last tick did, for --once
        self.daemon_logger: logging.Logger | None = None  # once the daemon is built

    def on_signal(self, signum: int) -> None:
        """After SignalStop toggled the framework's DEBUG (SIGUSR1), the daemon's own logger follows it."""
        if signum == signal.SIGUSR1 and self.daemon_logger is not None:
            self.daemon_logger.setLevel(logging.getLogger("daemons").getEffectiveLevel())

    def serve(self, serving: Serving) -> int:
        stop = serving.stop
        sock = listener = None
        try:
            if not self.once:
                sock = self._bind_wake_socket(serving)
                stop.attach(sock)
            self._drop_privileges(serving.credentials)
            reporting.init_sentry(self.name)
            self._check_database()
            self._refuse_twin(serving.paths)
            if not self.once:
                # Before the first tick, so a signup committed after that tick's claim pass still wakes us.
                listener = listen.for_daemon(self.name)
                stop.attach_listener(listener)
            daemon, runner, watch = self.wire(serving)
            self._adopt_logger(daemon)
            self.daemon_logger = daemon.logger
            self._setup(daemon)
            return self._loop(daemon, runner, watch, serving)
        finally:
            if listener is not None:
                listener.close()
            if sock is not None:
                sock.close()
                _unlink_socket(serving.paths.socket)
            connections.close_all()

    def wire(self, serving: Serving) -> tuple[Daemon, Runner, Watch]:
        """Build the daemon, its runner and its watch thread, each handed its collaborators.

        Who tells whom (drawn in docs/design.md): a stop signal's handler sets `serving.stop`
        and rings `serving.bell`, both built by `Lifecycle._signalled`; the watch thread sleeps
        on the bell and reads the `pulse` (pings, busy heartbeats, the stop deadline); the
        pulse rings the bell when a tick begins and when a stalled tick moves again, told by
        the runner (ticks) and the daemon's `Control` (progress); the runner waits on the stop.
        """
        # Imported here, in the daemon (first by `serve`): the operator's shell that detaches it never ticks.
        from daemons.process.runner import Pulse, Runner
        from daemons.process.watch import Watch

        stop, notifier = serving.stop, serving.notifier
        pulse = Pulse(notifier, self.daemon_cls.progress_limit, ring=serving.bell.ring)
        daemon = self.daemon_cls(self.instance, Control(stop, on_progress=pulse.progress))
        runner = Runner(daemon, instance=self.instance, notifier=notifier, pulse=pulse)
        timeout = conf.stop_timeout()

        def abandon(what: str) -> None:
            self.log.error("stop deadline of %g s passed; abandoning %s", timeout, what,
                           extra={"action": "stop_abandoned"})
            serving.exit_now(Exit.ABANDONED)

        watch = Watch(runner, pulse=pulse, bell=serving.bell, stop_requested_at=lambda: stop.stop_requested_at,
                      stop_timeout=timeout, abandon=abandon)
        return daemon, runner, watch

    def _loop(self, daemon: Daemon, runner: Runner, watch: Watch, serving: Serving) -> int:
        """Ready, then tick until a stop, then teardown."""
        stop, notifier = serving.stop, serving.notifier
        notifier.ready()
        serving.ready([])
        watch.start()
        try:
            code: int = Exit.OK
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
            watch.finish()
        self.log.info("stopped", extra={"action": "stopped"})
        return code

    def _adopt_logger(self, daemon: Daemon) -> None:
        """The daemon's own logger logs at the framework's level unless the project set one for it."""
        if daemon.logger.level == logging.NOTSET:
            daemon.logger.setLevel(logging.getLogger("daemons").getEffectiveLevel())

    def _bind_wake_socket(self, serving: Serving) -> socket.socket | None:
        try:
            sock = wakeup.bind(serving.paths.socket)
        except OSError as exc:
            raise StartupError(f"cannot create wake-up socket {serving.paths.socket}: {exc.strerror}") from None
        if sock is not None and serving.credentials is not None:
            try:
                serving.credentials.hand_over(serving.paths.socket, stat.S_IFSOCK)
            except PrivilegeError as exc:
                sock.close()
                raise StartupError(str(exc)) from None
        return sock

    def _drop_privileges(self, credentials: Credentials | None) -> None:
        if credentials is not None:
            # The loop's modules first, while we may still read the code: the daemon's user may not.
            from daemons.process import runner, watch  # noqa: F401
            try:
                credentials.apply()
            except PrivilegeError as exc:
                raise StartupError(str(exc)) from None

    def _check_database(self) -> None:
        """Make one query, so a daemon never reports ready without a working database."""
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            raise StartupError(checks.database_problem(exc)) from None

    def _refuse_twin(self, paths: RunPaths) -> None:
        """Refuse to run beside a live twin on this host whose PID file is in another run directory."""
        try:
            twin = heartbeat.live_duplicate(self.name, self.instance)
        except DatabaseError as exc:
            raise StartupError(checks.database_problem(exc)) from None
        if twin is not None:
            raise StartupError(f"already running on this host (pid {twin}), with its PID file in another run "
                               f"directory than {paths.pid.parent}")

    def _setup(self, daemon: Daemon) -> None:
        try:
            daemon.setup()
        except Exception as exc:
            raise StartupError(f"setup failed: {type(exc).__name__}: {exc}") from exc

    def _once_outcome(self, runner: Runner, result: TickResult | None) -> int:
        """The exit code of `--once` (Exit.TICK_FAILED if the tick raised), and its one line in `last_result_line`."""
        counters = runner.counters
        if counters.last_outcome == Outcome.ERROR:
            error = counters.last_error.splitlines()[-1] if counters.last_error else "unknown error"
            self.last_result_line = f"tick failed after {counters.last_duration_ms} ms: {error}"
            return Exit.TICK_FAILED
        if result is None or result.idle:
            self.last_result_line = f"idle tick in {counters.last_duration_ms} ms"
        else:
            what = result.summary or f"processed {result.processed}"
            self.last_result_line = f"{what} in {counters.last_duration_ms} ms"
        return Exit.OK

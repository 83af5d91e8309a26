"""The supervisor's children: which daemons it runs, each child's record, and how a fork becomes a plain daemon."""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from daemons import conf, registry
from daemons.daemon import Daemon
from daemons.process.backoff import backoff
from daemons.process.exits import Exit
from daemons.process.lifecycle import Lifecycle, StartupError
from daemons.process.paths import stem
from daemons.process.readiness import Reader, Readiness
from daemons.process.supervision import ChildState

# A child that ran this long before dying starts its backoff afresh.
BACKOFF_RESET_AFTER = 60.0
# How often an orphaned child checks its parent when PR_SET_PDEATHSIG is unavailable.
PARENT_POLL = 1.0
PR_SET_PDEATHSIG = 1


def restart_backoff(failures: int) -> float:
    """The delay before restart number `failures` (1, 2, ...): DAEMONS_RESTART_BACKOFF doubled, up to the cap."""
    return backoff(failures, base=conf.restart_backoff(), cap=conf.restart_backoff_cap())


@dataclass(frozen=True)
class ChildSpec:
    """One daemon instance the supervisor runs."""

    daemon_cls: type[Daemon]
    instance: int = 0

    @property
    def label(self) -> str:
        return stem(self.daemon_cls.name, self.instance)


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
    state: ChildState = ChildState.STARTING
    pid: int | None = None
    reader: Reader | None = None
    ever_ready: bool = False
    first_attempt_done: bool = False  # its first start succeeded or failed: readiness no longer waits for it
    first_error: str = ""  # why its very first start failed
    started_at: float = 0.0
    failures: int = 0  # consecutive deaths, for the backoff
    restart_at: float | None = None
    reason: str = ""  # why it last exited
    restarts: int = 0
    hung_kills: int = 0
    stop_deadline: float | None = None
    then: ChildState | None = None  # after a stop: STOPPED (held) or STARTING (restart at once)
    killed: bool = False

    @property
    def label(self) -> str:
        return self.spec.label

    def view(self, now: float) -> dict[str, Any]:
        return {"label": self.label, "name": self.spec.daemon_cls.name, "instance": self.spec.instance,
                "state": self.state.value, "pid": self.pid, "reason": self.reason,
                "next_try": None if self.restart_at is None else max(0.0, self.restart_at - now),
                "restarts": self.restarts, "hung_kills": self.hung_kills}


def fork_child(spec: ChildSpec, *, parent: int, log_to_file: bool, debug: bool,
               close_inherited: Callable[[], None]) -> tuple[int, Reader]:
    """Fork the daemon `spec` as a child of the supervisor `parent`; its PID and the end of its readiness pipe.

    The child runs the daemon's own life cycle from "signals" on and never returns: it
    exits with the daemon's status, and says READY or why it failed through the pipe.
    """
    connections.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    if gc.isenabled():
        # A restart: collect first, so the supervisor's garbage is not frozen with the rest (see `prepared`).
        gc.collect()
    # Everything alive joins the permanent generation, so the child's collector never writes to the pages
    # it shares with us.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, measured by process tests
        gc.enable()
        code: int = Exit.CRASHED
        ready = Readiness(write_fd)
        try:
            os.close(read_fd)
            become_child(spec, parent=parent, keep=write_fd, close_inherited=close_inherited)
            code = Lifecycle.for_daemon(spec.daemon_cls, instance=spec.instance, log_to_file=log_to_file,
                                        readiness=ready, debug=debug).run()
        except StartupError as exc:
            ready.failed(str(exc))
            code = Exit.FAILED
        except BaseException as exc:  # noqa: BLE001 - the child says why before it exits, whatever it was
            ready.failed(f"{type(exc).__name__}: {exc}")
        finally:
            ready.failed(f"it exited during startup with status {int(code)}")
            os._exit(code)
    os.close(write_fd)
    return pid, Reader(read_fd)


def become_child(spec: ChildSpec, *, parent: int, keep: int,
                 close_inherited: Callable[[], None]) -> None:  # pragma: no cover - runs in the child
    """Turn the fork into a plain daemon process: default signals, none of our fds, no systemd."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # Our own process group: a Ctrl-C or a group-wide SIGTERM reaches only the supervisor, which
    # passes one SIGTERM on; a second stop signal would make a child abandon its work.
    os.setpgid(0, 0)
    die_with_parent(parent)
    set_title(f"daemons: {spec.daemon_cls.name}[{spec.instance}]")
    # Only the supervisor speaks to systemd: a child's READY=1 would be taken for the unit's.
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(var, None)
    # Close what Python objects own through those objects, so a later close can't hit a reused fd.
    for handler in logging.getLogger().handlers[:]:
        handler.close()
        logging.getLogger().removeHandler(handler)
    close_inherited()  # what the supervisor itself holds: its control socket, its systemd notifier
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


def die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """Get SIGTERM when the supervisor dies: PR_SET_PDEATHSIG, and a polling thread where that fails."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:
        # The supervisor died before the death signal was armed.
        os._exit(Exit.ORPHANED)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def set_title(title: str) -> None:
    """What `ps` shows for this process."""
    import setproctitle

    setproctitle.setproctitle(title)


def describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by {signal.Signals(os.WTERMSIG(wait_status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


@contextmanager
def prepared(specs: list[ChildSpec]) -> Iterator[None]:
    """Fork the first children in this block: the supervisor's memory is warmed for them, and stays shared.

    As the CPython docs advise for a process that forks without exec: the collector is off from
    before the warm-up until the children are forked, so it frees nothing that would leave holes
    for a child's objects in pages it shares with us; `fork_child` freezes what is alive, and each
    child turns its collector back on. The supervisor's own collector is back on after the block.
    """
    gc.disable()
    try:
        preload(specs)
        yield
    finally:
        gc.enable()


def preload(specs: list[ChildSpec]) -> None:
    """Do in the supervisor what every child would otherwise do for itself, so the result is shared.

    Imports what a child imports, and runs the framework's reads and writes of a child's start
    and first tick once here, the writes rolled back: the ORM's lazily built state (field maps,
    compilers, lookups) is then built once. Failures are left to the children, which report
    them as their own startup errors.
    """
    import encodings.idna  # noqa: F401  (socket and smtplib encode host names with it)

    from django.db.models.sql import compiler  # noqa: F401  (first imported by a child's first query)

    from daemons.cluster import wakeup  # noqa: F401
    from daemons.process import memory, reporting, runner, watch  # noqa: F401

    if getattr(settings, "SENTRY_DSN", ""):
        # Each child starts its own Sentry client (threads don't survive a fork), but the
        # SDK's code, 4 MiB of heap, can be loaded once here and shared.
        import sentry_sdk.integrations.django
        import sentry_sdk.integrations.logging  # noqa: F401

    try:
        connections["default"].ensure_connection()
        for spec in specs:
            _rehearse_start(spec)
    except Exception:  # noqa: BLE001 - each child reports its own database errors
        pass
    connections.close_all()
    # What the warm-up freed goes back before the fork, and the means of a child's own release
    # (ctypes) is loaded once, here.
    memory.memory_release()


class _RolledBack(Exception):
    pass


def _rehearse_start(spec: ChildSpec) -> None:
    """The framework's queries in a child's start and first tick, changing nothing: the twin check
    (`DaemonService._refuse_twin`), the pause check, the tick's history and a heartbeat, rolled back."""
    from daemons.cluster import control, heartbeat, history

    name, instance = spec.daemon_cls.name, spec.instance
    heartbeat.live_duplicate(name, instance)
    control.is_paused(name, instance)
    try:
        with transaction.atomic():
            recorder, now = history.Recorder(name, instance), timezone.now()
            recorder.record(now, duration_ms=0)
            recorder.flush(now)
            heartbeat.write(name, instance, counters=heartbeat.Counters(), started_at=now, status_text="",
                            stopped=True)
            raise _RolledBack
    except _RolledBack:
        pass

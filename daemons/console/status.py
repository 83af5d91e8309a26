"""Read PID files, /proc and heartbeat rows into one `DaemonStatus` per daemon instance."""
from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.utils import timezone

from daemons import registry
from daemons.cluster.control import is_paused
from daemons.cluster.heartbeat import beat_hung, heartbeat_period, live_duplicate
from daemons.cluster.instances import Instance, cluster_instances
from daemons.process import pidfile, procfs, supervision
from daemons.process.exits import STATE_EXIT_CODES, Outcome, State, Status
from daemons.process.paths import RunPaths, instances
from daemons.scheduling.jobs import JobStatus, ScheduledDaemon
from daemons.scheduling.schedule import format_duration

if TYPE_CHECKING:
    from daemons.models import Heartbeat

# Every state, from best to worst (see `worst_exit_code`).
STATE_ORDER = list(STATE_EXIT_CODES)


@dataclass
class DaemonStatus:
    """One daemon instance on one host, as `daemonstatus` shows it (`as_json()` gives every field)."""

    name: str
    instance: int
    host: str
    state: State  # running | hung | stopped | stale | restarting; in the cluster view running | stopped | dead
    pid: int | None = None
    interval: float | None = None  # seconds between ticks
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    uptime_seconds: float | None = None
    rss_kib: int | None = None
    last_heartbeat: datetime | None = None
    last_tick_at: datetime | None = None
    last_outcome: Outcome | str = ""  # "" before the first tick
    last_duration_ms: int | None = None
    processed: int = 0
    errors: int = 0
    last_error: str = ""
    status_text: str = ""  # the daemon's own line (Daemon.status())
    info: str = ""  # what the table shows: the framework's notes, then status_text
    jobs: list[JobStatus] | None = None  # each job of a ScheduledDaemon
    paused: bool = False  # an operator paused it from the dashboard: it runs but does no work
    supervised: str = ""  # the supervisor's state for it (a ChildState), "" when no supervisor runs it
    restart_reason: str = ""  # supervised: why it last exited
    next_try_seconds: float | None = None  # supervised and restarting: seconds until the next start

    @property
    def exit_code(self) -> int:
        return STATE_EXIT_CODES[self.state]

    def last_tick_label(self, now: datetime) -> str:
        """How long ago the last tick was; "starting" during a running daemon's first interval, else "never"."""
        if self.last_tick_at is not None:
            return f"{format_duration((now - self.last_tick_at).total_seconds())} ago"
        if self.state == State.RUNNING and self.started_at is not None and self.interval is not None:
            if (now - self.started_at).total_seconds() <= max(self.interval, heartbeat_period(self.interval)):
                return "starting"
        return "never"

    def as_json(self) -> dict[str, Any]:
        """Every field, with times in ISO 8601 and jobs as a list of objects (null for other daemons)."""
        fields: dict[str, Any] = _jsonable(asdict(self))
        return fields


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def read_status(name: str, instance: int = 0,
                children: dict[tuple[str, int], supervision.ChildView] | None = None) -> DaemonStatus:
    """The status of daemon `name` (instance `instance`) on this host.

    The state comes from the PID lock, never from `kill -0`: a reused PID in a stale
    file reads as `stale`. Counters and tick times come from the heartbeat row. A daemon
    that holds its lock but whose heartbeat is older than three heartbeat periods (three
    intervals, between 1 and 30 s each) reads as `hung`. A daemon with no PID file here
    whose heartbeat from this host is fresh runs with its PID file in another run
    directory (another checkout, or another DAEMONS_RUN_DIR): it reads as `running`.
    """
    daemon_cls = registry.get(name)
    status = _lock_status(name, instance, daemon_cls.interval_seconds())
    notes = []
    try:
        notes += _heartbeat_status(status)
        status.paused = is_paused(name, instance)
        if status.paused:
            notes.append("paused")
        daemon = daemon_cls(instance)
        status.status_text = daemon.status()
        notes.append(status.status_text)
        if isinstance(daemon, ScheduledDaemon):
            status.jobs = daemon.job_statuses()
    except DatabaseError as exc:
        notes.append(f"database error: {exc}")
    if status.state in (State.RUNNING, State.HUNG) and status.pid:
        _read_process(status, status.pid)
    notes[:0] = _supervision_notes(status, supervision.children() if children is None else children)
    status.info = "; ".join(note for note in notes if note)
    return status


def lock_status(name: str, instance: int = 0) -> DaemonStatus:
    """What the PID lock and this host's heartbeat row say of daemon `name`/`instance`: its state and PID.

    The state and PID `read_status` gives, without building the daemon or asking a
    supervisor: what a start needs to know before it starts anything. A database error
    leaves what the PID file says.
    """
    status = _lock_status(name, instance, registry.get(name).interval_seconds())
    try:
        _heartbeat_status(status)
    except DatabaseError:
        pass
    return status


def _lock_status(name: str, instance: int, interval: float) -> DaemonStatus:
    pid_state = pidfile.inspect(RunPaths.for_daemon(name, instance).pid)
    return DaemonStatus(name=name, instance=instance, host=socket.gethostname(), state=pid_state.state,
                        pid=pid_state.pid, interval=interval)


def _heartbeat_status(status: DaemonStatus) -> list[str]:
    """Merge this host's heartbeat row into `status`, if there is one; the notes it gives. Raises DatabaseError."""
    from daemons.models import Heartbeat

    beat = Heartbeat.objects.filter(name=status.name, instance=status.instance, host=status.host).first()
    return [] if beat is None else _merge_heartbeat(status, beat)


def _merge_heartbeat(status: DaemonStatus, beat: Heartbeat) -> list[str]:
    """Add what this host's heartbeat row says to the PID file's `status`; the notes it gives."""
    for field in ("last_heartbeat", "last_tick_at", "last_outcome", "last_duration_ms", "processed",
                  "errors", "last_error", "stopped_at"):
        setattr(status, field, getattr(beat, field))
    notes = []
    twin = live_duplicate(status.name, status.instance) if status.state == State.STOPPED else None
    if twin is not None:
        status.state, status.pid = State.RUNNING, twin
        notes.append("PID file in another run directory")
    if status.state == State.RUNNING and beat.pid == status.pid:
        status.started_at = beat.started_at
        if beat_hung(beat, status.pid):
            status.state = State.HUNG
    return notes


def _read_process(status: DaemonStatus, pid: int) -> None:
    """Memory, start time and uptime of the running `pid`, from /proc."""
    status.rss_kib = procfs.rss_kib(pid)
    status.started_at = procfs.started_at(pid) or status.started_at
    if status.started_at:
        status.uptime_seconds = (timezone.now() - status.started_at).total_seconds()


def _supervision_notes(status: DaemonStatus, children: dict[tuple[str, int], supervision.ChildView]) -> list[str]:
    """What the running supervisor says of this daemon: it may be restarting it, or holding it stopped."""
    child = children.get((status.name, status.instance))
    if child is None:
        return []
    status.supervised, status.restart_reason = child.state.value, child.reason
    if status.state not in (State.STOPPED, State.STALE):
        return []
    if child.state in (supervision.ChildState.RESTARTING, supervision.ChildState.STARTING):
        status.state, status.next_try_seconds = State.RESTARTING, child.next_try
        when = f"next try in {format_duration(child.next_try)}" if child.next_try else "starting"
        return [f"restarting ({when}) after: {child.reason}" if child.reason else f"restarting ({when})"]
    if child.state == supervision.ChildState.STOPPED:
        return ["stopped (supervised)"]
    return []


def read_statuses(names: list[str] | None = None) -> list[DaemonStatus]:
    """The status of every instance of `names` on this host; by default of every daemon meant to run.

    Every registered daemon is meant to run (`make run` starts them all); each is listed
    with instance 0 and every other instance that has a PID file here.
    """
    children = supervision.children()
    return [read_status(name, i, children) for name in (names or registry.names()) for i in instances(name)]


def cluster_statuses(names: list[str] | None = None, now: datetime | None = None) -> list[DaemonStatus]:
    """Every instance of every daemon (or of `names`) on every host, from the heartbeat rows alone.

    By host, then name and instance. The state follows `daemons.cluster.instances`: running,
    stopped, or dead (no heartbeat for three heartbeat periods). No PID file is read, so it
    answers the same on every host. Raises DatabaseError.
    """
    return [_from_instance(row) for row in cluster_instances(now=now, names=names, by_host=True)]


def _from_instance(row: Instance) -> DaemonStatus:
    """`row` as `daemonstatus --all-hosts` shows it: "paused" counts only for a running instance."""
    try:
        interval: float | None = registry.get(row.name).interval_seconds()
    except registry.UnknownDaemon:  # registered only on another host
        interval = None
    paused = row.verdict == State.PAUSED
    return DaemonStatus(
        name=row.name, instance=row.instance, host=row.host, state=row.state, pid=row.pid, interval=interval,
        started_at=row.started_at, stopped_at=row.stopped_at, uptime_seconds=row.uptime_seconds,
        last_heartbeat=row.last_heartbeat, last_tick_at=row.last_tick_at, last_outcome=row.last_outcome,
        last_duration_ms=row.last_duration_ms, processed=row.processed, errors=row.errors,
        last_error=row.last_error, status_text=row.status_text, paused=paused,
        info="; ".join(note for note in ("paused" if paused else "", row.status_text) if note),
    )


def worst_exit_code(rows: list[DaemonStatus]) -> int:
    """The exit code of `daemonstatus` for `rows`: the code of the worst state among them.

    Worst first: hung (4: it holds its lock, so nothing restarts it), stale (1: it died
    without cleaning up), stopped (3), running (0). No rows: 0.
    """
    if not rows:
        return Status.RUNNING
    return max(rows, key=lambda row: STATE_ORDER.index(row.state)).exit_code

"""Every daemon instance on every host, as the heartbeat and pause rows tell it: one query, one row type.

`daemonstatus --all-hosts`, the health endpoint, the metrics and the dashboard all read
the cluster through `cluster_instances`, so they can't disagree about which instance runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from daemons.cluster import control
from daemons.cluster.heartbeat import db_now, instance_state
from daemons.process.exits import State

if TYPE_CHECKING:
    from daemons.models import Heartbeat


def heartbeat_state(beat: Heartbeat, now: datetime) -> State:
    """"running", "stopped" or "dead" at `now`, the database's time (`daemons.cluster.heartbeat.db_now`), by the
    cluster's one rule (`daemons.cluster.heartbeat.instance_state`)."""
    return instance_state(name=beat.name, stopped_at=beat.stopped_at, last_heartbeat=beat.last_heartbeat, now=now)


def state_with_pause(state: State, paused: bool) -> State:
    """`state`, or "paused" for a running instance an operator paused: it runs but does no work."""
    return State.PAUSED if paused and state == State.RUNNING else state


@dataclass(frozen=True)
class Instance:
    """One daemon instance on one host, as its heartbeat row and the operator's pauses tell it."""

    name: str
    instance: int
    host: str
    pid: int
    state: State  # running, stopped or dead (`heartbeat_state`)
    paused: bool  # an operator paused it, whatever its state
    started_at: datetime
    stopped_at: datetime | None
    last_heartbeat: datetime
    read_at: datetime  # the database's time it was judged at
    last_tick_at: datetime | None
    last_outcome: str
    last_duration_ms: int | None
    processed: int
    errors: int
    last_error: str
    status_text: str

    @property
    def verdict(self) -> State:
        """Its state, or "paused" if it runs paused (see `state_with_pause`)."""
        return state_with_pause(self.state, self.paused)

    @property
    def heartbeat_age(self) -> timedelta:
        return self.read_at - self.last_heartbeat

    @property
    def uptime_seconds(self) -> float | None:
        """Seconds since it started, in the database's time, while it runs; else None."""
        return (self.read_at - self.started_at).total_seconds() if self.state == State.RUNNING else None


def cluster_instances(*, now: datetime | None = None, names: list[str] | None = None,
                      exclude_host: str | None = None, by_host: bool = False) -> list[Instance]:
    """Every instance that ever wrote a heartbeat (of `names`, if given; not on `exclude_host`), judged at `now`.

    `now` is the database's time, by default read here (`db_now()`), never this host's clock.
    Ordered by name, instance and host, or with `by_host` by host, name and instance, in the
    database's collation. Two queries, three with `db_now()`. Raises DatabaseError.
    """
    from daemons.models import Heartbeat

    now = now or db_now()
    beats = Heartbeat.objects.order_by(*(("host", "name", "instance") if by_host else ("name", "instance", "host")))
    if names:
        beats = beats.filter(name__in=names)
    if exclude_host is not None:
        beats = beats.exclude(host=exclude_host)
    paused = control.paused()
    return [
        Instance(
            name=beat.name, instance=beat.instance, host=beat.host, pid=beat.pid, state=heartbeat_state(beat, now),
            paused=(beat.name, beat.instance) in paused, started_at=beat.started_at, stopped_at=beat.stopped_at,
            last_heartbeat=beat.last_heartbeat, read_at=now,
            last_tick_at=beat.last_tick_at, last_outcome=beat.last_outcome, last_duration_ms=beat.last_duration_ms,
            processed=beat.processed, errors=beat.errors, last_error=beat.last_error, status_text=beat.status_text,
        )
        for beat in beats
    ]

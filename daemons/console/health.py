"""Which daemons are alive: each heartbeat row's state, and the verdict the health endpoint gives."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError

from daemons import conf, registry
from daemons.cluster import control
from daemons.cluster.heartbeat import db_now, instance_state
from daemons.console.status import read_status
from daemons.models import Heartbeat
from daemons.process.exits import State
from daemons.process.paths import instances

# States of a daemon that the health endpoint accepts; anything else answers 503.
HEALTHY = frozenset({State.RUNNING, State.PAUSED})
# When a daemon's instances disagree, the verdict is the first of these found among them.
VERDICT_ORDER = (State.HUNG, State.DEAD, State.RESTARTING, State.RUNNING, State.PAUSED, State.STALE, State.STOPPED)


def heartbeat_state(beat: Heartbeat, now: datetime) -> State:
    """"running", "stopped" or "dead" at `now`, the database's time (`daemons.cluster.heartbeat.db_now`), by the
    cluster's one rule (`daemons.cluster.heartbeat.instance_state`)."""
    return instance_state(name=beat.name, stopped_at=beat.stopped_at, last_heartbeat=beat.last_heartbeat, now=now)


@dataclass(frozen=True)
class InstanceHealth:
    """One daemon instance on one host, as its heartbeat row tells it."""

    name: str
    instance: int
    host: str
    pid: int
    state: State  # running, dead or stopped
    paused: bool
    last_heartbeat: datetime
    heartbeat_age: timedelta
    last_outcome: str
    last_duration_ms: int | None
    processed: int
    errors: int
    last_error: str
    status_text: str


def cluster_health(*, now: datetime) -> list[InstanceHealth]:
    """One row per daemon instance and host that ever wrote a heartbeat, by name, at `now` (a `db_now()`).

    Two queries.
    """
    paused = control.paused()
    return [
        InstanceHealth(
            name=beat.name, instance=beat.instance, host=beat.host, pid=beat.pid, state=heartbeat_state(beat, now),
            paused=(beat.name, beat.instance) in paused, last_heartbeat=beat.last_heartbeat,
            heartbeat_age=now - beat.last_heartbeat, last_outcome=beat.last_outcome,
            last_duration_ms=beat.last_duration_ms, processed=beat.processed, errors=beat.errors,
            last_error=beat.last_error, status_text=beat.status_text,
        )
        for beat in Heartbeat.objects.order_by("name", "instance", "host")
    ]


def expected_daemons() -> list[str]:
    """The daemons the health endpoint requires: DAEMONS_HEALTH_EXPECTED, else every registered one."""
    expected = conf.get("HEALTH_EXPECTED")
    if expected is None:
        return registry.names()
    return [expected] if isinstance(expected, str) else list(expected)


def daemon_states(*, now: datetime | None = None) -> dict[str, State]:
    """Each expected daemon's state across the cluster.

    This host's instances are read with `daemons.console.status.read_status` (PID lock, then
    heartbeat); other hosts' from their heartbeat rows. A daemon is "running" when some
    instance runs and none is hung or dead; "paused" when an operator paused
    every running instance; otherwise the worst state found ("hung", "dead",
    "stale", "stopped"). A name that no app registers is "unknown". If the database is
    unreachable, only this host's PID files count. Other hosts' rows are judged at `now`,
    by default the database's time (`daemons.cluster.heartbeat.db_now`), never by this host's clock.
    """
    host = socket.gethostname()
    try:
        now = now or db_now()
        remote = [(beat.name, beat.instance, heartbeat_state(beat, now))
                  for beat in Heartbeat.objects.exclude(host=host)]
        paused = control.paused()
    except DatabaseError:
        remote, paused = [], set()
    states: dict[str, State] = {}
    for name in expected_daemons():
        try:
            found = [(i, read_status(name, i).state) for i in instances(name)]
        except registry.UnknownDaemon:
            states[name] = State.UNKNOWN
            continue
        found += [(instance, state) for beat_name, instance, state in remote if beat_name == name]
        seen = {State.PAUSED if state == State.RUNNING and (name, i) in paused else state for i, state in found}
        states[name] = next((state for state in VERDICT_ORDER if state in seen), State.UNKNOWN)
    return states


def all_healthy(states: dict[str, State]) -> bool:
    return all(state in HEALTHY for state in states.values())

"""Which daemons are alive: the verdict the health endpoint gives, from this host's PID locks and every heartbeat."""
from __future__ import annotations

import socket
from datetime import datetime

from django.db import DatabaseError

from daemons import conf, registry
from daemons.cluster.instances import cluster_instances, state_with_pause
from daemons.console.status import read_status
from daemons.process.exits import State
from daemons.process.paths import instances

# States of a daemon that the health endpoint accepts; anything else answers 503.
HEALTHY = frozenset({State.RUNNING, State.PAUSED})
# When a daemon's instances disagree, the verdict is the first of these found among them.
VERDICT_ORDER = (State.HUNG, State.DEAD, State.RESTARTING, State.RUNNING, State.PAUSED, State.STALE, State.STOPPED)


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
    try:
        remote = cluster_instances(now=now, exclude_host=socket.gethostname())
    except DatabaseError:
        remote = []
    states: dict[str, State] = {}
    for name in expected_daemons():
        try:
            here = [read_status(name, i) for i in instances(name)]
        except registry.UnknownDaemon:
            states[name] = State.UNKNOWN
            continue
        seen = {state_with_pause(row.state, row.paused) for row in here}
        seen |= {row.verdict for row in remote if row.name == name}
        states[name] = next((state for state in VERDICT_ORDER if state in seen), State.UNKNOWN)
    return states


def all_healthy(states: dict[str, State]) -> bool:
    return all(state in HEALTHY for state in states.values())

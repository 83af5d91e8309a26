"""Heartbeat policy in one place: how often a daemon writes its row, what it writes, when it is overdue or dead.

Every time in a heartbeat row that another process judges (`last_heartbeat`, `stopped_at`)
is the database's, written as `Now()` in the UPDATE, and every judgement compares it with
the database's time too (`Now()` in SQL, or `db_now()` read once per decision). So a host
whose clock runs ahead or behind, or jumps, can't make a live instance look dead, nor a
dead one alive: the hosts' own clocks are never compared with each other.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import DateTimeField, ExpressionWrapper, Q, QuerySet
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.db.models.sql import Query

from daemons import registry
from daemons.process import procfs
from daemons.process.exits import Outcome, State
from daemons.scheduling.schedule import format_duration

if TYPE_CHECKING:
    from daemons.models import Heartbeat

logger = logging.getLogger("daemons.heartbeat")

# Heartbeats are written at least this often, even while a long tick runs.
HEARTBEAT_MAX_AGE = 30.0
# A running daemon whose heartbeat is older than this many heartbeat periods is hung (or dead).
HUNG_AFTER_PERIODS = 3
# Rows of instances stopped or dead for longer than this are deleted, by the daemons themselves...
PRUNE_AFTER = timedelta(days=1)
# ...each of which looks at most this often, so pruning costs one DELETE an hour. The tick history
# (`daemons.cluster.history`) prunes its rows on the same cadence.
PRUNE_EVERY = timedelta(hours=1)


def db_now(using: str = DEFAULT_DB_ALIAS) -> datetime:
    """The database's current time, aware: the one clock every host's liveness decisions use.

    One query (`SELECT` of Django's `Now()`: PostgreSQL's statement time, SQLite's time
    with milliseconds). Read it once per decision and compare heartbeat rows with it,
    never with this host's clock. Raises DatabaseError.
    """
    connection = connections[using]
    query = Query(None)
    expression = Now().resolve_expression(query)
    sql, params = query.get_compiler(using).compile(expression)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", list(params))  # a list, so the backend's placeholder escaping applies
        value = cursor.fetchone()[0]
    for converter in connection.ops.get_db_converters(expression):
        value = converter(value, expression, connection)
    moment: datetime = value
    return moment


def db_ago(age: timedelta) -> ExpressionWrapper[CombinedExpression]:
    """The database's time `age` ago, as an SQL expression (see `db_now`)."""
    return ExpressionWrapper(Now() - age, output_field=DateTimeField())


def heartbeat_period(interval: float) -> float:
    """How often a daemon with `interval` writes its heartbeat: each tick, within 1..30 s."""
    return min(max(interval, 1.0), HEARTBEAT_MAX_AGE)


def heartbeat_overdue(name: str, age: timedelta) -> bool:
    """True if a heartbeat `age` old means daemon `name` is no longer making progress.

    Daemons write at least once per heartbeat period (their interval, within 1 to 30 s),
    between ticks and, during a tick, as long as the tick reports progress. Three periods
    without one means hung (a tick without progress past its limit), crashed or cut off.
    An unknown daemon (one registered only on another host) gets the longest period.
    """
    return age > overdue_after(name)


def overdue_after(name: str) -> timedelta:
    """The heartbeat age past which daemon `name` is overdue: three heartbeat periods (3 to 90 s)."""
    try:
        interval = registry.get(name).interval_seconds()
    except registry.UnknownDaemon:
        interval = HEARTBEAT_MAX_AGE
    return timedelta(seconds=HUNG_AFTER_PERIODS * heartbeat_period(interval))


def instance_state(*, name: str, stopped_at: datetime | None, last_heartbeat: datetime, now: datetime) -> State:
    """The state of a daemon instance anywhere in the cluster, from its heartbeat row: the one rule.

    `now` is the database's time (`db_now()`), as `last_heartbeat` is.

    - "stopped": it said so on its way out (a clean stop).
    - "dead": no heartbeat for longer than `overdue_after(name)` (three heartbeat periods,
      3 to 90 s) and no clean stop: it crashed, hangs, or its host died or is cut off from
      the database. Its claims are free for the others at once (see `gone`), and its row
      is pruned once it has been dead for `PRUNE_AFTER`.
    - "running" otherwise.
    On its own host a PID lock tells more (`daemons.console.status.read_status`: a dead instance
    that still holds its lock is "hung", one that left its PID file is "stale").
    """
    if stopped_at is not None:
        return State.STOPPED
    return State.DEAD if heartbeat_overdue(name, now - last_heartbeat) else State.RUNNING


def gone(name: str, now: datetime | None = None) -> QuerySet[Heartbeat]:
    """Heartbeat rows of daemon `name`'s instances that hold nothing any more: stopped or dead.

    Dead by the database's clock, in the query itself; `now` (a database time) is for tests.
    """
    from daemons.models import Heartbeat

    cutoff = db_ago(overdue_after(name)) if now is None else now - overdue_after(name)
    return Heartbeat.objects.filter(name=name).filter(Q(stopped_at__isnull=False) | Q(last_heartbeat__lt=cutoff))


def prune(now: datetime | None = None) -> int:
    """Delete the rows of instances stopped or dead for over PRUNE_AFTER (by the database's clock); return how many.

    Raises DatabaseError.
    """
    from daemons.models import Heartbeat

    cutoff = db_ago(PRUNE_AFTER) if now is None else now - PRUNE_AFTER
    deleted, _ = Heartbeat.objects.filter(last_heartbeat__lt=cutoff).delete()
    return deleted


_last_prune: float | None = None


def prune_if_due(clock: Callable[[], float] = time.monotonic) -> None:
    """Prune at most once per PRUNE_EVERY in this process (a daemon calls it with its heartbeats); never raises."""
    global _last_prune
    if _last_prune is not None and clock() - _last_prune < PRUNE_EVERY.total_seconds():
        return
    _last_prune = clock()
    try:
        deleted = prune()
    except DatabaseError as exc:
        logger.debug("could not prune heartbeat rows: %s", exc)
        return
    if deleted:
        logger.info("pruned %d heartbeat rows of instances gone for over a day", deleted,
                    extra={"action": "heartbeats_pruned"})


@dataclass
class Counters:
    """What a daemon's heartbeat row says about its ticks."""

    ticks: int = 0
    processed: int = 0
    errors: int = 0
    last_tick_at: datetime | None = None
    last_outcome: Outcome | str = ""  # "" before the first tick
    last_duration_ms: int | None = None
    last_error: str = ""


def key(name: str, instance: int) -> dict[str, Any]:
    """The heartbeat row of daemon `name`, instance `instance`, on this host."""
    return {"name": name, "instance": instance, "host": socket.gethostname()}


def write(name: str, instance: int, *, counters: Counters, started_at: datetime, status_text: str,
          stopped: bool = False) -> None:
    """Write this process's heartbeat row with `counters`, stamped with the database's time; raises DatabaseError."""
    from daemons.models import Heartbeat

    now = Now()
    Heartbeat.objects.update_or_create(
        **key(name, instance),
        defaults={
            "pid": os.getpid(),
            "started_at": started_at,
            "last_heartbeat": now,
            "last_tick_at": counters.last_tick_at,
            "last_outcome": counters.last_outcome,
            "last_duration_ms": counters.last_duration_ms,
            "processed": counters.processed,
            "errors": counters.errors,
            "last_error": counters.last_error,
            "status_text": status_text[:500],
            "stopped_at": now if stopped else None,
        },
    )
    if not stopped:
        prune_if_due()


def write_busy(name: str, instance: int, *, processed: int) -> None:
    """Mid-tick: say the tick is alive and making progress, with the units done so far; raises DatabaseError."""
    from daemons.models import Heartbeat

    Heartbeat.objects.filter(**key(name, instance)).update(
        last_heartbeat=Now(), last_outcome=Outcome.BUSY, processed=processed
    )


def process_row(name: str, instance: int, *, host: str | None = None, pid: int | None = None) -> QuerySet[Heartbeat]:
    """The heartbeat row of process `pid` (by default this one) running daemon `name`/`instance` on `host`.

    Empty once another process of that instance wrote the row: what `touch` stamps, so a caller
    that composes the stamp into a statement of its own stamps the same row.
    """
    from daemons.models import Heartbeat

    return Heartbeat.objects.filter(name=name, instance=instance, host=host or socket.gethostname(),
                                    pid=pid or os.getpid())


def touch(name: str, instance: int, *, host: str | None = None, pid: int | None = None) -> None:
    """Stamp a heartbeat row (by default this process's) with the database's time now, and nothing else.

    For work that others judge by the heartbeat (a claim, say): inside the same transaction, the work is
    never seen as a gone process's. Raises DatabaseError.
    """
    process_row(name, instance, host=host, pid=pid).update(last_heartbeat=Now())


def live_duplicate(name: str, instance: int) -> int | None:
    """The PID of another live process on this host that runs daemon `name`/`instance`, or None.

    Read from a fresh heartbeat row, so it finds a twin whose PID file is in another run
    directory. A row that is stopped, overdue or ours is no twin; nor is a PID that is
    dead, a zombie, or a newer process that reused the number (it started after the row).
    """
    from daemons.models import Heartbeat

    beat = Heartbeat.objects.filter(**key(name, instance), stopped_at__isnull=True).first()
    if beat is None or beat.pid == os.getpid() or heartbeat_overdue(name, db_now() - beat.last_heartbeat):
        return None
    started = procfs.started_at(beat.pid)
    if started is None or started > beat.started_at + timedelta(seconds=2) or procfs.is_zombie(beat.pid):
        return None
    return beat.pid


def beat_hung(beat: Heartbeat, pid: int | None) -> bool:
    """The hung rule: the heartbeat row is `pid`'s, and overdue (see `heartbeat.heartbeat_overdue`)."""
    return beat.pid == pid and heartbeat_overdue(beat.name, db_now() - beat.last_heartbeat)


def hung_reason(last_heartbeat: datetime | None) -> str:
    """Why a daemon that holds its lock is hung, in words (its heartbeat's age)."""
    if last_heartbeat is None:
        return "it never wrote a heartbeat"
    return f"no heartbeat for {format_duration((db_now() - last_heartbeat).total_seconds())}"


def heartbeat_hung(name: str, instance: int, pid: int) -> str:
    """Why process `pid`, running daemon `name`/`instance` here, is hung by `daemonstatus`'s rule; "" if it isn't.

    One query. Raises DatabaseError.
    """
    from daemons.models import Heartbeat

    beat = Heartbeat.objects.filter(name=name, instance=instance, host=socket.gethostname()).first()
    return hung_reason(beat.last_heartbeat) if beat is not None and beat_hung(beat, pid) else ""

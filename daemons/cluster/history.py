"""Ticks, work and errors per minute: counted in memory after each tick, written about once a minute."""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, OuterRef, Subquery, Sum
from django.db.models.functions import TruncHour

from daemons.cluster.heartbeat import PRUNE_EVERY
from daemons.models import Heartbeat, TickMinute

logger = logging.getLogger("daemons.history")

# Rows older than this are deleted; the dashboard shows 24 hours.
RETENTION = timedelta(hours=25)
# A recorder writes at most about this often, however short its daemon's interval.
WRITE_EVERY = timedelta(minutes=1)


def minute_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class Bucket:
    minute: datetime
    ticks: int = 0
    processed: int = 0
    errors: int = 0
    busy_ms: int = 0


@dataclass
class Recorder:
    """One daemon process's tick history; the runner calls `record()` after every tick and `flush()` at stop.

    `record()` only adds to counters in memory, except when a minute ended or the last
    write is a minute old: then it writes one row (an UPDATE, or an INSERT for a new
    minute), and once an hour it deletes this instance's rows older than 25 hours. An
    idle daemon ticking every second thus costs about one query a minute. A database
    error is logged at DEBUG and that minute's counts are dropped; it never raises.
    """

    name: str
    instance: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    ticks_total: int = 0
    bucket: Bucket | None = None
    last_write: datetime | None = None
    last_prune: datetime | None = None

    def record(self, now: datetime, *, duration_ms: int, processed: int = 0, error: bool = False) -> None:
        """Count one tick that began at `now`, took `duration_ms`, did `processed` units and maybe raised."""
        minute = minute_floor(now)
        if self.bucket is not None and self.bucket.minute != minute:
            self.flush(now)
        if self.bucket is None:
            self.bucket = Bucket(minute)
        bucket = self.bucket
        bucket.ticks += 1
        bucket.processed += processed
        bucket.errors += int(error)
        bucket.busy_ms += max(0, duration_ms)
        self.ticks_total += 1
        if self.last_write is None or now - self.last_write >= WRITE_EVERY:
            self.flush(now)

    def flush(self, now: datetime) -> None:
        """Write the counts not yet written, adding to the minute's row if another write made it."""
        bucket, self.bucket = self.bucket, None
        if bucket is None:
            return
        self.last_write = now
        key = {"name": self.name, "instance": self.instance, "host": self.host, "minute": bucket.minute}
        try:
            updated = TickMinute.objects.filter(**key).update(
                ticks=F("ticks") + bucket.ticks, processed=F("processed") + bucket.processed,
                errors=F("errors") + bucket.errors, busy_ms=F("busy_ms") + bucket.busy_ms,
                pid=self.pid, ticks_total=self.ticks_total,
            )
            if not updated:
                self._insert(key, bucket)
            if self.last_prune is None or now - self.last_prune >= PRUNE_EVERY:
                self.last_prune = now
                TickMinute.objects.filter(name=self.name, instance=self.instance, host=self.host,
                                          minute__lt=now - RETENTION).delete()
        except DatabaseError as exc:
            logger.debug("could not record the tick history: %s", exc, extra={"action": "history_failed"})

    def _insert(self, key: dict[str, object], bucket: Bucket) -> None:
        values = {"ticks": bucket.ticks, "processed": bucket.processed, "errors": bucket.errors,
                  "busy_ms": bucket.busy_ms, "pid": self.pid, "ticks_total": self.ticks_total}
        try:
            with transaction.atomic():
                TickMinute.objects.create(**key, **values)
        except IntegrityError:
            # Another process of this instance (a restart within the minute) inserted it first.
            TickMinute.objects.filter(**key).update(
                **{k: F(k) + v for k, v in values.items() if k not in ("pid", "ticks_total")},
                pid=self.pid, ticks_total=self.ticks_total,
            )


@dataclass(frozen=True)
class HourTotals:
    start: datetime  # UTC, on the hour
    ticks: int
    processed: int
    errors: int


def hourly(*, now: datetime, hours: int = 24) -> dict[str, list[HourTotals]]:
    """Each daemon's ticks, work and errors in each of the last `hours` hours, all instances and hosts summed.

    Oldest hour first, hours without a row as zeros; the last is the hour `now` falls in.
    Daemons with no row in the period are left out. One grouped query.
    """
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(hours=hours - 1)
    rows = (
        TickMinute.objects.filter(minute__gte=first, minute__lte=now)
        .annotate(hour=TruncHour("minute", tzinfo=UTC))
        .values("name", "hour")
        .annotate(ticks=Sum("ticks"), processed=Sum("processed"), errors=Sum("errors"))
        .order_by()
    )
    found: dict[str, dict[datetime, Mapping[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["name"], {})[row["hour"].astimezone(UTC)] = row
    starts = [first + timedelta(hours=offset) for offset in range(hours)]
    empty = {"ticks": 0, "processed": 0, "errors": 0}
    return {
        name: [HourTotals(start, **{k: by_hour.get(start, empty)[k] for k in empty}) for start in starts]
        for name, by_hour in sorted(found.items())
    }


def tick_counters() -> dict[tuple[str, int, str], int]:
    """Ticks since each heartbeat row's process started, keyed by (name, instance, host).

    Read from that process's newest history row, so it lags by up to a minute; a process
    that has not written one yet counts 0. One query.
    """
    newest = (
        TickMinute.objects.filter(
            name=OuterRef("name"), instance=OuterRef("instance"), host=OuterRef("host"), pid=OuterRef("pid"),
            minute__gte=OuterRef("started_at") - timedelta(minutes=1),
        )
        .order_by("-minute")
        .values("ticks_total")[:1]
    )
    rows = Heartbeat.objects.annotate(ticks=Subquery(newest)).values_list("name", "instance", "host", "ticks")
    return {(name, instance, host): ticks or 0 for name, instance, host, ticks in rows}

"""Claims on customers and their leases: taking, confirming, renewing and giving them back."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, DateTimeField, Exists, ExpressionWrapper, OuterRef, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now, StrIndex
from django.db.models.lookups import GreaterThan
from django.db.models.sql import UpdateQuery

from daemons.cluster import heartbeat

from ..models import Customer, CustomerQuerySet
from .owner import DAEMON_NAME, Owner, process_marker_sql


def gone_holder() -> Exists:
    """Whether a customer's holder is a process whose heartbeat says it stopped or is dead, as SQL on its row.

    A dead instance (no heartbeat for three heartbeat periods: `daemons.cluster.heartbeat.instance_state`)
    crashed, hangs or is cut off: its claims are free at once rather than when their leases
    end. Should it come back, it can record nothing for them, having lost the claims.

    A correlated subquery on the few heartbeat rows, run only for a row held by another
    process: a read that finds nobody due reads no heartbeat.
    """
    named = GreaterThan(StrIndex(OuterRef("claimed_by"), process_marker_sql()), 0)
    return Exists(heartbeat.gone(DAEMON_NAME).filter(named))


def claimable_for(owner: Owner, now: datetime) -> CustomerQuerySet:
    """The customers due at `now` that `owner` may claim (`CustomerQuerySet.claimable`), but not its own."""
    # Never our own live claims: a refusal the breaker holds back is still ours and due, and
    # claimed again it would be sent again, tick after tick of a loop that never ends.
    return Customer.objects.due(now).claimable(owner.prefix, gone_holder()).exclude(claimed_by=str(owner))


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.ONBOARDING_LEASE_SECONDS)


def lease_end(duration: timedelta | None = None) -> ExpressionWrapper:
    """When a lease taken now ends, by the database's clock.

    Every process reads and writes leases against the one clock they share, so a host
    whose clock runs ahead can't see another host's live claim as expired.
    """
    lease = lease_duration() if duration is None else duration
    return ExpressionWrapper(Now() + lease, output_field=DateTimeField())


def customers_claim(*, owner: Owner, now: datetime, limit: int) -> list[Customer]:
    """Claim up to `limit` customers due at `now` for `owner`, oldest first, in one statement.

    A customer is claimable when nobody holds it, its lease has ended by the database's
    clock, it is held under `owner`'s lock key by another process (a dead predecessor:
    holding the PID lock proves it dead), or it is held by a process whose heartbeat says
    it is dead or stopped (`gone_holder`). Each claim records `owner` and a lease ending
    `lease_end()`, and stamps `owner`'s heartbeat in the same commit: a process back from
    a stop (SIGSTOP, a stalled VM) must not have its new claims look like a gone process's.

    On PostgreSQL that is one statement and one round trip: an UPDATE of the candidates
    locked with `FOR UPDATE SKIP LOCKED` (concurrent claimers take disjoint rows and never
    wait), with the stamp in a WITH of the same statement; an idle tick is that statement
    finding nobody, which writes nothing. Its holders' heartbeats are those of the
    statement's snapshot, where the old code read them again once the rows were locked. A
    holder back from a stop that confirms its claims (`claims_confirm`) before our lock
    keeps them all the same: if it committed before our snapshot, its heartbeat is fresh
    in it; if after, the row's lease it renewed differs from the snapshot's, and the lock
    re-checks the row (`CustomerQuerySet.claimable`); if it holds the row's lock, we skip
    the row; and if we lock first, its confirmation waits and finds the claim gone. What is
    left is a holder stopped after it confirmed: an email in flight, sent again with its
    Message-ID and recorded once, as the record checks the claim and its lease.

    On SQLite, one writer at a time: one indexed read answers an idle tick without the
    write lock, then the UPDATE ... RETURNING and the stamp share one IMMEDIATE transaction.
    """
    statements = claim_statements(connection.vendor, owner, limit, lease_duration(),
                                  heartbeat.overdue_after(DAEMON_NAME))
    if statements.anyone is None:
        return statements.customers(statements.claim.fetch(now))
    if not statements.anyone.fetch(now):
        return []
    with transaction.atomic():
        rows = statements.claim.fetch(now)
        if rows and statements.stamp is not None:
            statements.stamp.fetch(now)
    return statements.customers(rows)


# Stands for the caller's `now` while a claim's statements are compiled; no real `now` is this.
_NOW = datetime(1970, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@dataclass(frozen=True)
class Statement:
    """SQL compiled once, with its parameters and the places in them that take the caller's `now`."""

    sql: str
    params: tuple[Any, ...]
    now_at: tuple[int, ...]

    @classmethod
    def compiled(cls, sql: str, params: Sequence[Any]) -> Statement:
        placeholder = connection.ops.adapt_datetimefield_value(_NOW)
        return cls(sql, tuple(params), tuple(i for i, param in enumerate(params) if param == placeholder))

    def fetch(self, now: datetime) -> list[tuple[Any, ...]]:
        """Run the statement with `now`; return the rows it returns, if any."""
        params = list(self.params)
        for i in self.now_at:
            params[i] = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            return cursor.fetchall() if cursor.description else []


@dataclass(frozen=True)
class ClaimStatements:
    """`customers_claim`'s statements: `claim` returns the claimed rows. On SQLite `anyone` is the read before it
    and `stamp` stamps our heartbeat after it; on PostgreSQL `claim` does all three."""

    claim: Statement
    anyone: Statement | None
    stamp: Statement | None
    converters: dict[int, tuple[list[Any], Any]]

    def customers(self, rows: list[tuple[Any, ...]]) -> list[Customer]:
        compiler = Customer.objects.all().query.get_compiler(connection=connection)
        names = [field.attname for field in Customer._meta.concrete_fields]
        claimed = [Customer.from_db(connection.alias, names, row)
                   for row in compiler.apply_converters(rows, self.converters)]
        return sorted(claimed, key=lambda customer: (customer.created_at, customer.pk))


def update_sql(queryset: QuerySet[Any], **values: Any) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE that `queryset.update(**values)` would run, and its parameters."""
    query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    query.add_update_values(values)
    sql, params = query.get_compiler(connection=connection).as_sql()
    return sql, tuple(params)


@functools.lru_cache(maxsize=32)
def claim_statements(vendor: str, owner: Owner, limit: int, lease: timedelta, overdue: timedelta) -> ClaimStatements:
    """`customers_claim`'s statements for `owner` on the `vendor` backend, compiled from the querysets.

    Once per process and owner: compiling them costs more than running them. `lease` and
    `overdue` (the heartbeat age of a gone process) are in the key, so a change of either
    compiles them anew.
    """
    quote = connection.ops.quote_name
    fields = Customer._meta.concrete_fields
    columns = ", ".join(quote(str(field.column)) for field in fields)
    candidates = claimable_for(owner, _NOW).order_by("created_at", "id")
    compiler = Customer.objects.all().query.get_compiler(connection=connection)
    converters = compiler.get_converters([field.get_col(Customer._meta.db_table) for field in fields])
    if vendor != "postgresql":
        claim_sql, params = update_sql(Customer.objects.filter(id__in=candidates.values("id")[:limit]),
                                       claimed_by=str(owner), claim_expires_at=lease_end(lease))
        exists = candidates.query.exists().get_compiler(connection=connection).as_sql()
        stamp = update_sql(owner.heartbeat_row(), last_heartbeat=Now())
        return ClaimStatements(Statement.compiled(f"{claim_sql} RETURNING {columns}", params),
                               Statement.compiled(*exists), Statement.compiled(*stamp), converters)
    # Django compiles FOR UPDATE only inside a transaction; nothing runs in this one.
    with transaction.atomic():
        locked = candidates.select_for_update(skip_locked=True).values("id")[:limit]
        claim_sql, claim_params = update_sql(Customer.objects.filter(id__in=locked),
                                             claimed_by=str(owner), claim_expires_at=lease_end(lease))
    claimed = quote("claimed")
    # Stamped only when something was claimed, so that an idle tick writes nothing.
    any_claimed = RawSQL(f"EXISTS (SELECT 1 FROM {claimed})", (), output_field=BooleanField())
    touch_sql, touch_params = update_sql(owner.heartbeat_row().filter(any_claimed), last_heartbeat=Now())
    sql = (f"WITH {claimed} AS ({claim_sql} RETURNING {columns}), {quote('stamped')} AS ({touch_sql}) "
           f"SELECT {columns} FROM {claimed}")
    return ClaimStatements(Statement.compiled(sql, (*claim_params, *touch_params)), None, None, converters)


def claims_confirm(*, owner: Owner) -> set[int]:
    """The ids of the unfinished customers `owner` still holds, their leases renewed and our heartbeat stamped.

    For a process that may have been stopped long enough to be taken for gone: whatever another process
    took meanwhile is not in the answer, and what is in it can't be taken until our heartbeat is overdue
    again. The rows are locked while we look, so a claimer that locked them first wins them outright.
    """
    with transaction.atomic():
        owner.touch_heartbeat()
        held = Customer.objects.held_by(owner)
        ids = set(held.select_for_update().values_list("id", flat=True))
        Customer.objects.filter(id__in=ids).update(claim_expires_at=lease_end())
        return ids


def claims_renew(*, owner: Owner) -> int:
    """Extend to `lease_end()` every unfinished claim `owner` still holds; return how many.

    A claim someone else took after it expired is not ours any more and is left alone; nor
    is one whose lease already ended (after a partition, say): it may have been taken and
    finished meanwhile, so it is not renewed but left to be claimed again.
    """
    return Customer.objects.held_by(owner).lease_live().update(claim_expires_at=lease_end())


class ClaimKeeper:
    """Keeps `owner`'s claims theirs through a long batch, or a long wait for a mail server's reply.

    `renew_if_due` renews them once a third of the lease has passed since the claim or
    the last renewal. `keepalive` is what a send calls while it waits: it renews when due
    (a database error is left to the lease: a claim that lapses is only lost, never
    recorded twice) and reports `progress`, so the daemon is not taken for hung.
    """

    def __init__(self, owner: Owner, progress: Callable[[], object] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.owner = owner
        self.progress = progress
        self.clock = clock
        self.renewed_at = clock()  # a fresh claim carries a fresh lease
        self.confirmed_at = self.renewed_at  # and the claim stamped our heartbeat
        # Well inside the age at which the others take us for gone (`heartbeat.gone`).
        self.confirm_after = heartbeat.overdue_after(DAEMON_NAME).total_seconds() / 3
        self.held: set[int] | None = None  # what the last `claims_confirm` found ours; None: all we claimed

    def holds(self, customer: Customer) -> bool:
        """Whether `customer` is still ours to send to, asked of the database only after a pause.

        A gap of a third of the overdue age since the last look (the process was stopped, or starved) may have
        made us look gone to the others, who then took our claims: `claims_confirm` says which are left.
        """
        if self.clock() - self.confirmed_at >= self.confirm_after:
            self.held = claims_confirm(owner=self.owner)
            self.confirmed_at = self.renewed_at = self.clock()
        return self.held is None or customer.pk in self.held

    def renew_if_due(self) -> None:
        if self.clock() - self.renewed_at >= lease_duration().total_seconds() / 3:
            claims_renew(owner=self.owner)
            self.renewed_at = self.clock()

    def keepalive(self) -> None:
        with suppress(DatabaseError):
            self.renew_if_due()
        self.progress()


def claims_release(*, owner: Owner) -> int:
    """Give back every unfinished claim of `owner`, so others can take them at once."""
    return Customer.objects.filter(claimed_by=str(owner)).update(claimed_by="", claim_expires_at=None)


def claims_release_predecessors(*, owner: Owner) -> int:
    """Free the claims of dead processes under `owner`'s lock key; return how many.

    Call only while holding the instance's PID lock, which proves those processes dead.
    """
    predecessors = Customer.objects.held_under(owner.prefix).exclude(claimed_by=str(owner))
    return predecessors.update(claimed_by="", claim_expires_at=None)

"""Claims on customers and their leases: taking, confirming, renewing and giving them back."""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, QuerySet
from django.db.models.functions import Now

from daemons.cluster import heartbeat

from ..models import Customer
from .owner import DAEMON_NAME, Owner, process_marker


def gone_markers(now: datetime | None = None) -> list[str]:
    """The `process_marker`s of the onboarding processes whose heartbeat says they stopped or are dead.

    A dead instance (no heartbeat for three heartbeat periods: `daemons.cluster.heartbeat.instance_state`)
    crashed, hangs or is cut off: its claims are free at once rather than when their leases
    end. Should it come back, it can record nothing for them, having lost the claims.
    """
    gone = heartbeat.gone(DAEMON_NAME, now).values_list("host", "instance", "pid")
    return [process_marker(host, instance, pid) for host, instance, pid in gone]


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.ONBOARDING_LEASE_SECONDS)


def lease_end() -> ExpressionWrapper:
    """When a lease taken now ends, by the database's clock.

    Every process reads and writes leases against the one clock they share, so a host
    whose clock runs ahead can't see another host's live claim as expired.
    """
    return ExpressionWrapper(Now() + lease_duration(), output_field=DateTimeField())


def customers_claim(*, owner: Owner, now: datetime, limit: int) -> list[Customer]:
    """Claim up to `limit` customers due at `now` for `owner`, oldest first, in one short transaction.

    A customer is claimable when nobody holds it, its lease has ended by the database's
    clock, it is held under `owner`'s lock key by another process (a dead predecessor:
    holding the PID lock proves it dead), or it is held by a process whose heartbeat says it is dead or stopped
    (`gone_markers`). Each claim records `owner` and a lease ending `lease_end()`.

    On PostgreSQL the candidates are locked with `FOR UPDATE SKIP LOCKED`, so concurrent
    claimers take disjoint rows without waiting for each other. On SQLite the transaction
    is `IMMEDIATE` and so holds the single write lock from its first statement. On both,
    the UPDATE repeats the claimable filter, so a row claimed by someone else in between
    is never taken twice, and only the rows this UPDATE really took are returned.
    """
    due = Customer.objects.due(now)
    # An idle tick is the common case: answer it with one indexed read, without the
    # heartbeats' read, SQLite's write lock or PostgreSQL row locks.
    if not due.exists():
        return []

    def claimable() -> QuerySet[Customer]:
        # Never our own live claims: a refusal the breaker holds back is still ours and due, and
        # claimed again it would be sent again, tick after tick of a loop that never ends.
        return due.claimable(owner.prefix, gone_markers()).exclude(claimed_by=str(owner))

    # Customers due but all held by live others: find that out without locking anything either.
    seen = claimable()
    if not seen.exists():
        return []
    with transaction.atomic():
        # A process back from a stop (SIGSTOP, a stalled VM) may find its heartbeat stale: claims it takes
        # in this transaction must not look like a gone process's to the others once they are committed.
        owner.touch_heartbeat()
        candidates = seen.order_by("created_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("id", flat=True)[:limit])
        if not ids:
            return []
        # The holders' heartbeats again, read after the rows are locked: a holder that came back and
        # confirmed its claims (`claims_confirm`) before our lock keeps them.
        claimable().filter(id__in=ids).update(claimed_by=str(owner), claim_expires_at=lease_end())
        return list(Customer.objects.filter(id__in=ids, claimed_by=str(owner)).order_by("created_at", "id"))


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
    with transaction.atomic():
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
    with transaction.atomic():
        return Customer.objects.filter(claimed_by=str(owner)).update(claimed_by="", claim_expires_at=None)


def claims_release_predecessors(*, owner: Owner) -> int:
    """Free the claims of dead processes under `owner`'s lock key; return how many.

    Call only while holding the instance's PID lock, which proves those processes dead.
    """
    with transaction.atomic():
        return (
            Customer.objects.held_under(owner.prefix)
            .exclude(claimed_by=str(owner))
            .update(claimed_by="", claim_expires_at=None)
        )

"""Writes about customers: signup, claiming, onboarding and its failures."""
from __future__ import annotations

import logging
import os
import random
import smtplib
import socket
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from . import selectors
from .models import Customer, Onboarding

logger = logging.getLogger("customers.onboarding")


def email_normalize(email: str) -> str:
    """The stored form of an address: NFKC, trimmed, with the domain lower-cased and in ASCII.

    NFKC folds look-alikes such as full-width letters; the domain is IDNA-encoded so
    `bücher.de` and `xn--bcher-kva.de` are one domain and the stored address is ASCII
    whenever the local part is. The local part keeps its case (mail goes to the address
    as given); uniqueness ignores case through the database's `Lower(email)` constraint.
    A domain IDNA refuses stays as typed (lower-cased), for the validator to reject.
    """
    email = unicodedata.normalize("NFKC", email).strip()
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    domain = domain.lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local}@{domain}"


@transaction.atomic
def customer_create(*, name: str, email: str) -> tuple[Customer, bool]:
    """Create a customer, or return the existing one with that address in any case.

    Returns `(customer, created)`. The database's unique constraint decides, so two
    simultaneous signups with one address make one row. A new customer wakes the
    onboarding daemon once the transaction commits.
    """
    email = email_normalize(email)
    try:
        with transaction.atomic():
            customer = Customer.objects.create(name=name.strip(), email=email)
    except IntegrityError:
        return Customer.objects.get(email__iexact=email), False
    transaction.on_commit(_wake_onboarding)
    return customer, True


def _wake_onboarding() -> None:
    from .daemons import OnboardingDaemon

    OnboardingDaemon.wake()


# --- onboarding ------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: this host, daemon instance and process."""

    host: str
    instance: int
    pid: int

    @property
    def prefix(self) -> str:
        return f"{self.host}/{self.instance}/"

    def __str__(self) -> str:
        return f"{self.prefix}{self.pid}"

    @classmethod
    def current(cls, instance: int = 0) -> Owner:
        return cls(socket.gethostname(), instance, os.getpid())


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.ONBOARDING_LEASE_SECONDS)


def customers_claim(*, owner: Owner, now: datetime, limit: int) -> list[Customer]:
    """Claim up to `limit` due customers for `owner`, oldest first, in one short transaction.

    A customer is claimable when nobody holds it, its lease expired, or it is held by a
    dead predecessor of `owner` (same host and instance: holding the PID lock proves the
    predecessor is dead). On PostgreSQL rows locked by another claimer are skipped
    (`SKIP LOCKED`); on SQLite one conditional UPDATE decides, under the write lock.
    """
    expires = now + lease_duration()
    claimable = selectors.customers_due(now=now).filter(
        Q(claimed_by="") | Q(claim_expires_at__lt=now) | Q(claimed_by__startswith=owner.prefix)
    )
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            ids = list(
                claimable.select_for_update(skip_locked=True).order_by("created_at", "id").values_list("id", flat=True)[
                    :limit
                ]
            )
        else:
            ids = list(claimable.order_by("created_at", "id").values_list("id", flat=True)[:limit])
        if not ids:
            return []
        # The filter is repeated in the UPDATE so a row taken meanwhile is not taken twice.
        claimable.filter(id__in=ids).update(claimed_by=str(owner), claim_expires_at=expires)
        return list(Customer.objects.filter(id__in=ids, claimed_by=str(owner)).order_by("created_at", "id"))


def claims_renew(*, owner: Owner, now: datetime) -> int:
    """Extend the lease on everything `owner` holds; return how many claims were renewed."""
    with transaction.atomic():
        return Customer.objects.filter(claimed_by=str(owner), onboarded_at__isnull=True).update(
            claim_expires_at=now + lease_duration()
        )


def claims_release(*, owner: Owner) -> int:
    """Give back every unfinished claim of `owner`, so others can take them at once."""
    with transaction.atomic():
        return Customer.objects.filter(claimed_by=str(owner)).update(claimed_by="", claim_expires_at=None)


def claims_release_predecessors(*, owner: Owner) -> int:
    """Free the claims of dead processes with `owner`'s host and instance.

    Call only while holding the instance's PID lock, which proves those processes dead.
    """
    with transaction.atomic():
        return (
            Customer.objects.filter(claimed_by__startswith=owner.prefix, onboarded_at__isnull=True)
            .exclude(claimed_by=str(owner))
            .update(claimed_by="", claim_expires_at=None)
        )


def welcome_message_id(customer: Customer) -> str:
    """The same Message-ID for every copy of a customer's welcome email."""
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(">") or "localhost"
    return f"<welcome-{customer.pk}-{int(customer.created_at.timestamp())}@{domain}>"


def welcome_email(customer: Customer) -> EmailMultiAlternatives:
    context = {"customer": customer}
    message = EmailMultiAlternatives(
        subject=render_to_string("emails/welcome_subject.txt", context).strip(),
        body=render_to_string("emails/welcome.txt", context),
        to=[customer.email],
        headers={"Message-ID": welcome_message_id(customer)},
    )
    message.attach_alternative(render_to_string("emails/welcome.html", context), "text/html")
    return message


def customer_onboard(*, customer: Customer, owner: Owner, now: datetime | None = None, connection=None) -> bool:
    """Send the welcome email, then record the onboarding, exactly once.

    The email goes out first, outside any transaction. The record and `onboarded_at`
    commit together, and only while `owner` still holds the claim; the unique key on
    `Onboarding.customer` stops a second record whatever happens. Returns False if the
    claim was lost (another process finished the customer).
    """
    message = welcome_email(customer)
    message.connection = connection
    message.send(fail_silently=False)
    now = now or timezone.now()
    with transaction.atomic():
        won = Customer.objects.filter(pk=customer.pk, claimed_by=str(owner), onboarded_at__isnull=True).update(
            onboarded_at=now, claimed_by="", claim_expires_at=None, next_attempt_at=None
        )
        if not won:
            return False
        Onboarding.objects.create(
            customer=customer, onboarded_at=now, message_id=welcome_message_id(customer), onboarded_by=str(owner)
        )
    return True


def is_permanent(exc: BaseException) -> bool:
    """True for an SMTP 5xx rejection, which no retry will cure."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return False


def retry_delay(attempts: int, *, base: float = 30.0, cap: float = 3600.0, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with full jitter: a random delay up to base * 2^(attempts-1), capped."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


def customer_onboarding_failed(*, customer: Customer, owner: Owner, error: BaseException, now: datetime) -> Customer:
    """Record a failed attempt: count it, schedule a retry, or mark the customer failed.

    A permanent SMTP rejection fails the customer at once; otherwise the customer fails
    after ONBOARDING_MAX_ATTEMPTS attempts. The claim is given back either way.
    """
    max_attempts = settings.ONBOARDING_MAX_ATTEMPTS
    text = f"{type(error).__name__}: {error}"[:2000]
    with transaction.atomic():
        row = Customer.objects.select_for_update().get(pk=customer.pk)
        if row.onboarded_at is not None or row.claimed_by != str(owner):
            return row
        row.attempts += 1
        row.last_error = text
        row.claimed_by = ""
        row.claim_expires_at = None
        if is_permanent(error) or row.attempts >= max_attempts:
            row.failed_at = now
            row.next_attempt_at = None
        else:
            row.next_attempt_at = now + retry_delay(row.attempts)
        row.save(update_fields=["attempts", "last_error", "claimed_by", "claim_expires_at", "failed_at", "next_attempt_at"])
    return row


@transaction.atomic
def customer_retry_onboarding(*, customer: Customer) -> None:
    """Put a failed customer back in the queue with a fresh attempt count."""
    Customer.objects.filter(pk=customer.pk, onboarded_at__isnull=True).update(
        failed_at=None, attempts=0, next_attempt_at=None, claimed_by="", claim_expires_at=None
    )
    transaction.on_commit(_wake_onboarding)

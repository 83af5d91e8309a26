"""Recording an onboarding or a failed attempt, only while the claim and its lease are ours."""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.functions import Now

from ..models import Customer, Onboarding
from .failures import error_describe, is_permanent
from .owner import Owner
from .retry import retry_delay
from .welcome import welcome_message_id


class Outcome(enum.Enum):
    ONBOARDED = "onboarded"
    NOT_OURS = "not_ours"  # the claim was lost; whoever holds it now finishes the customer
    RETRY = "retry"
    FAILED = "failed"
    HELD = "held"  # refused, but held back by the Breaker until it is clear whom to blame
    UNKNOWN = "unknown"  # sent, but never confirmed: an attempt, resent later with the same Message-ID
    ATTENTION = "attention"  # never confirmed once too often: not sent again until a person looks


@dataclass(frozen=True)
class OnboardResult:
    outcome: Outcome
    customer: Customer
    error: str = ""  # the failure, with addresses redacted: safe for logs and Sentry


def customer_onboarding_complete(*, customer: Customer, owner: Owner, now: datetime) -> bool:
    """Commit the onboarding record and `onboarded_at` together, if `owner` holds the claim and its lease.

    Returns False, changing nothing, when the claim was lost to another process, its lease
    ended by the database's clock (a process cut off past its lease records nothing: another
    may be onboarding the customer), or the customer is already onboarded. Written once per
    process (`completion_statements`), as this runs once per customer: on PostgreSQL one
    statement, the INSERT fed by the UPDATE's RETURNING (a statement is atomic, and one round
    trip instead of four with BEGIN and COMMIT); elsewhere the two in one transaction.
    """
    update, insert = completion_statements(connection.vendor)
    at = connection.ops.adapt_datetimefield_value(now)
    message_id = welcome_message_id(customer)
    if not insert:  # one statement
        with connection.cursor() as cursor:
            cursor.execute(update, [at, customer.pk, str(owner), at, message_id, str(owner)])
            return cursor.rowcount == 1
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(update, [at, customer.pk, str(owner)])
        if not cursor.rowcount:
            return False
        cursor.execute(insert, [customer.pk, at, message_id, str(owner)])
    return True


@functools.cache
def completion_statements(vendor: str) -> tuple[str, str]:
    """The UPDATE and the INSERT of `customer_onboarding_complete` on the `vendor` backend, with their placeholders;
    on PostgreSQL both in one statement, and no INSERT.

    Built once from the models' tables and columns and the backend's own `Now()`: compiling
    an ORM UPDATE and INSERT costs more than running them. The UPDATE takes the time,
    the customer's id and the owner; the INSERT the customer's id, the time, the
    Message-ID and the owner (PostgreSQL's one statement: the UPDATE's, then the time, the
    Message-ID and the owner).
    """
    quote = connection.ops.quote_name

    def column(model: type[models.Model], name: str) -> str:
        [field] = [field for field in model._meta.concrete_fields if field.name == name]
        return quote(str(field.column))

    db_now, _ = Customer.objects.none().query.get_compiler(connection=connection).compile(Now())
    set_done = ", ".join(f"{column(Customer, name)} = NULL"
                         for name in ("claim_expires_at", "next_attempt_at"))
    update = (f"UPDATE {quote(Customer._meta.db_table)} SET {column(Customer, 'onboarded_at')} = %s, "
              f"{column(Customer, 'claimed_by')} = '', {set_done} "
              f"WHERE {column(Customer, 'id')} = %s AND {column(Customer, 'claimed_by')} = %s "
              f"AND {column(Customer, 'claim_expires_at')} >= {db_now} AND {column(Customer, 'onboarded_at')} IS NULL")
    fields = ", ".join(column(Onboarding, name) for name in ("customer", "onboarded_at", "message_id", "onboarded_by"))
    insert = f"INSERT INTO {quote(Onboarding._meta.db_table)} ({fields}) "
    if vendor == "postgresql":  # one statement, the INSERT fed by the UPDATE's RETURNING, and no INSERT of its own
        done = column(Customer, "id")
        return f"WITH done AS ({update} RETURNING {done}) {insert} SELECT {done}, %s, %s, %s FROM done", ""
    return update, insert + "VALUES (%s, %s, %s, %s)"


def customer_onboarding_failed(
    *, customer: Customer, owner: Owner, error: BaseException, now: datetime, outcome_unknown: bool = False
) -> Customer | None:
    """Record a failed attempt: count it, schedule a retry, or mark the customer failed or needing attention.

    A permanent SMTP rejection (5xx) fails the customer at once; otherwise the customer
    fails after ONBOARDING_MAX_ATTEMPTS attempts, and before that waits `retry_delay`.
    An attempt whose outcome is unknown (`outcome_unknown`: the server may have the
    message) can't fail the customer: after ONBOARDING_MAX_UNKNOWN_OUTCOMES of them, or
    on the last attempt, the customer is marked as needing attention with the reason,
    and is not sent again until someone retries it.
    The claim is given back either way. Returns the updated customer, or None, recording
    nothing, when `owner` no longer holds the claim or its lease ended.
    """
    with transaction.atomic():
        # A lease that ended (by the database's clock) is lost, as in `customer_onboarding_complete`.
        row = Customer.objects.select_for_update().filter(pk=customer.pk).lease_live().first()
        if row is None or row.onboarded_at is not None or row.claimed_by != str(owner):
            return None
        row.attempts += 1
        row.last_error = error_describe(error)
        row.claimed_by = ""
        row.claim_expires_at = None
        row.unknown_outcomes += outcome_unknown
        out_of_attempts = row.attempts >= settings.ONBOARDING_MAX_ATTEMPTS
        if outcome_unknown and (out_of_attempts or row.unknown_outcomes >= settings.ONBOARDING_MAX_UNKNOWN_OUTCOMES):
            row.attention_at = now
            row.attention_reason = (
                f"{row.unknown_outcomes} send(s) with an unknown outcome (the message went out, no reply came), "
                f"so it is not sent again: it may have been delivered; check the mail server's log for its "
                f"Message-ID {welcome_message_id(row)} before retrying. Last: {row.last_error}")[:2000]
            row.next_attempt_at = None
        elif not outcome_unknown and (is_permanent(error) or out_of_attempts):
            row.failed_at = now
            row.next_attempt_at = None
        else:
            row.next_attempt_at = now + retry_delay(row.attempts)
        row.save(update_fields=["attempts", "last_error", "claimed_by", "claim_expires_at", "failed_at",
                                "next_attempt_at", "unknown_outcomes", "attention_at", "attention_reason"])
    return row

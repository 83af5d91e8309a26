"""Onboarding one customer: send the welcome email, then record what came of it."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from ..models import Customer
from .breaker import Breaker
from .failures import MailServerUnavailable, error_describe, is_mail_outage, is_permanent
from .mail import SendOutcomeUnknown, mail_connection, message_send
from .owner import Owner
from .records import OnboardResult, Outcome, customer_onboarding_complete, customer_onboarding_failed
from .welcome import welcome_email


def customer_onboard(
    *, customer: Customer, owner: Owner, mail: BaseEmailBackend | None = None, now: datetime | None = None,
    breaker: Breaker | None = None, keepalive: Callable[[], object] | None = None,
) -> OnboardResult:
    """Send the welcome email, then record the onboarding, exactly once.

    The email goes out first, outside any transaction, through `mail` (opened here if it
    is not open). The `Onboarding` record and `onboarded_at` then commit together, and
    only while `owner` still holds the claim; the unique key on `Onboarding.customer`
    stops a second record whatever happens. A kill between the two leaves the customer
    claimed but not onboarded, so it is sent again: with the same Message-ID.

    A failure to send that belongs to this customer (a refused recipient, a bad
    template) is recorded by `customer_onboarding_failed`. A failure of the mail server
    itself raises `MailServerUnavailable` and records nothing against the customer.
    With a `breaker`, a permanent refusal goes to it first: it may hold the refusal back
    (`MailServerUnavailable`). Database errors propagate.

    A send whose end of DATA went out but was never answered (`SendOutcomeUnknown`) has
    an unknown outcome: it counts as an attempt and is retried later, with the same
    Message-ID, until ONBOARDING_MAX_UNKNOWN_OUTCOMES of them mark the customer as
    needing attention (`Outcome.UNKNOWN`, then `Outcome.ATTENTION`). `keepalive` is
    called while the reply is awaited (see `message_send`).
    """
    own_mail = mail is None
    error: Exception | None = None
    try:
        if mail is None:
            mail = mail_connection()
        welcome_send(customer, mail, keepalive=keepalive)
    # Everything: a failure to send is recorded, never raised, and `send_record` is the one place that says
    # whose it is (the customer's, like a refused address or a template's error, or the mail server's).
    except Exception as exc:  # noqa: BLE001
        error = exc
    finally:
        if own_mail and mail is not None:
            mail.close()
    return send_record(customer=customer, owner=owner, error=error, now=now, breaker=breaker)


def welcome_send(customer: Customer, mail: BaseEmailBackend, keepalive: Callable[[], object] | None = None) -> None:
    """Send `customer` the welcome email through `mail`, and nothing else: no database, so any thread may call it.

    Errors propagate as `message_send` raises them; `send_record` says what they mean for the customer.
    """
    message_send(welcome_email(customer), mail, keepalive=keepalive)


def send_record(*, customer: Customer, owner: Owner, error: Exception | None, now: datetime | None = None,
                breaker: Breaker | None = None) -> OnboardResult:
    """Record the outcome of `welcome_send` to `customer`: `error` is what it raised, None if the server took it.

    See `customer_onboard` for what each outcome records; raises `MailServerUnavailable` for a failure of the
    mail server itself (or one the `breaker` holds back), recording nothing against the customer.
    """
    if isinstance(error, SendOutcomeUnknown):
        row = customer_onboarding_failed(customer=customer, owner=owner, error=error, now=now or timezone.now(),
                                         outcome_unknown=True)
        if row is None:
            return OnboardResult(Outcome.NOT_OURS, customer, error_describe(error))
        return OnboardResult(Outcome.ATTENTION if row.attention_at else Outcome.UNKNOWN, row, error_describe(error))
    if error is not None:
        if is_mail_outage(error):
            raise MailServerUnavailable(error_describe(error)) from error
        if breaker is not None and is_permanent(error) and breaker.refused(customer, error, now or timezone.now()):
            return OnboardResult(Outcome.HELD, customer, error_describe(error))
        row = customer_onboarding_failed(customer=customer, owner=owner, error=error, now=now or timezone.now())
        if row is None:
            return OnboardResult(Outcome.NOT_OURS, customer, error_describe(error))
        return OnboardResult(Outcome.FAILED if row.failed_at else Outcome.RETRY, row, error_describe(error))
    if breaker is not None:
        breaker.accepted()
    if customer_onboarding_complete(customer=customer, owner=owner, now=now or timezone.now()):
        return OnboardResult(Outcome.ONBOARDED, customer)
    return OnboardResult(Outcome.NOT_OURS, customer)

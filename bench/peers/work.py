"""The onboarding work every peer's task does: the same templates, Django's email framework, the same record.

`onboard` is what a peer's user writes: load the customer, send the welcome email with
the showcase's own `welcome_email` (so the templates, headers and Message-ID are ours),
then record the onboarding. Without `connection` the email opens and closes its own
SMTP connection, as `send_mail` does; with one, the connection is reused.
"""
from __future__ import annotations

import os
from typing import Any

from django.core.mail import get_connection
from django.db import transaction
from django.utils import timezone

_reused: Any = None


def reused_connection() -> Any:
    """One SMTP connection per worker process, opened on first use and kept open."""
    global _reused
    if _reused is None or _reused.connection is None:
        _reused = get_connection()
        _reused.open()
    return _reused


def onboard(customer_id: int, *, reuse_connection: bool = False) -> None:
    """Send customer `customer_id` the welcome email and record it, unless already onboarded."""
    from customers.models import Customer, Onboarding
    from customers.onboarding import welcome_email

    customer = Customer.objects.get(pk=customer_id)
    if customer.onboarded_at is not None:
        return
    message = welcome_email(customer)
    if reuse_connection:
        message.connection = reused_connection()
        try:
            message.send()
        except OSError:  # the server hung up on the kept connection: reconnect once
            global _reused
            _reused = None
            message.connection = reused_connection()
            message.send()
    else:
        message.send()
    now = timezone.now()
    with transaction.atomic():
        Onboarding.objects.create(customer=customer, onboarded_at=now, message_id=message.extra_headers["Message-ID"],
                                  onboarded_by=f"bench/{os.getpid()}")
        Customer.objects.filter(pk=customer.pk).update(onboarded_at=now)

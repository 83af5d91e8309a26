"""The onboarding daemon: finds new customers and onboards each one, exactly once."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from django.conf import settings
from django.core.mail import get_connection
from django.utils import timezone

from daemons import Daemon, TickResult, register, reporting

from . import selectors, services

logger = logging.getLogger("daemons.onboarding")


@register
class OnboardingDaemon(Daemon):
    """Claims waiting customers in batches and sends each a welcome email.

    A tick keeps claiming until nobody is due, so a backlog clears at full speed. The
    lease on claims is renewed while a batch runs, so a slow mail server can't make a
    claim expire under us.
    """

    name = "onboarding"
    interval = 5.0

    def setup(self) -> None:
        self.owner = services.Owner.current(self.instance)
        # Holding our PID lock proves any predecessor with our host and instance is dead.
        released = services.claims_release_predecessors(owner=self.owner)
        if released:
            logger.info("took back %d claims of a dead predecessor", released, extra={"action": "claims_reclaimed"})

    def tick(self, now: datetime) -> TickResult:
        owner = getattr(self, "owner", None) or services.Owner.current(self.instance)
        batch_size = settings.ONBOARDING_BATCH_SIZE
        renew_every = services.lease_duration().total_seconds() / 3
        onboarded = failed = 0
        mail = None
        try:
            while not self.stop_requested():
                batch = services.customers_claim(owner=owner, now=now, limit=batch_size)
                if not batch:
                    break
                if mail is None:
                    # Opened only when there is mail to send: an idle tick touches no server.
                    mail = get_connection()
                    mail.open()
                renewed_at = time.monotonic()
                for customer in batch:
                    if self.stop_requested():
                        break
                    if time.monotonic() - renewed_at > renew_every:
                        services.claims_renew(owner=owner, now=timezone.now())
                        renewed_at = time.monotonic()
                    try:
                        if services.customer_onboard(customer=customer, owner=owner, connection=mail):
                            onboarded += 1
                    except Exception as exc:
                        failed += 1
                        self.record_failure(customer, owner, exc)
                        # The SMTP session may be broken; the next send reconnects.
                        mail.close()
                now = timezone.now()
        finally:
            if mail is not None:
                mail.close()
            # Whatever a stop interrupted goes back at once rather than after the lease.
            services.claims_release(owner=owner)
        summary = f"onboarded {onboarded} customer{'s' if onboarded != 1 else ''}"
        if failed:
            summary += f", {failed} failed"
        return TickResult(processed=onboarded + failed, summary=summary)

    def record_failure(self, customer, owner: services.Owner, exc: Exception) -> None:
        row = services.customer_onboarding_failed(customer=customer, owner=owner, error=exc, now=timezone.now())
        logger.warning(
            "onboarding customer %s failed (attempt %d): %s", customer.pk, row.attempts, exc,
            extra={"action": "onboard_failed", "customer_id": customer.pk},
        )
        # The customer id identifies the case; the address stays out of Sentry.
        reporting.capture(exc, daemon=self.name, customer_id=customer.pk)

    def status(self) -> str:
        return f"{selectors.customers_waiting_count()} waiting, {selectors.customers_failed_count()} failed"


from . import digest  # noqa: F401

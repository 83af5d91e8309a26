"""The showcase's daemons: onboarding (each new customer, exactly once) and the daily digest."""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from daemons import Daemon, TickResult, register, reporting
from daemons.jobs import ScheduledDaemon, job

from . import onboarding, selectors
from .digest import digest_send
from .onboarding import Outcome

# Outcomes that are failures to onboard this time: logged, reported, and the SMTP session not reused.
FAILURES = (Outcome.RETRY, Outcome.FAILED, Outcome.UNKNOWN, Outcome.ATTENTION)
# How each failure is logged: the structured action, and what happens next.
FAILURE_ACTIONS = {
    Outcome.RETRY: ("onboard_retry", "will retry"),
    Outcome.FAILED: ("onboard_failed", "gave up"),
    Outcome.UNKNOWN: ("onboard_unknown", "outcome unknown, will resend with the same Message-ID"),
    Outcome.ATTENTION: ("onboard_attention", "outcome unknown too often, needs attention"),
}


class OnboardingFailure(Exception):
    """What Sentry gets for one customer's failure: its id and a redacted error, no address."""


@register
class OnboardingDaemon(Daemon):
    """Claims waiting customers in batches and sends each a welcome email.

    A tick keeps claiming until nobody is due, so a backlog clears at full speed. The
    lease on claims is renewed while a batch runs, so a slow mail server can't make a
    claim expire under us. When the mail server is down, or refuses everyone (see
    `onboarding.Breaker`), the tick gives its claims back and ends, and later ticks wait
    with backoff before trying the server again; no customer's attempts are used up.

    One SMTP connection serves tick after tick, so a wake-up for one signup costs no
    connection set-up. It is closed after `mail_keep_alive` seconds without mail, after
    any failed send (its session may be in any state), and at teardown; one left idle
    since an earlier tick is checked with a NOOP before it is trusted with a message.
    """

    name = onboarding.DAEMON_NAME
    # The customer whose email is being sent; read by work_in_progress() from another thread.
    in_flight: int | None = None
    interval = settings.ONBOARDING_INTERVAL_SECONDS
    # Seconds without mail after which the SMTP connection is closed; a server drops idle sessions anyway.
    mail_keep_alive = 60.0

    def setup(self) -> None:
        self.mail: BaseEmailBackend | None = None
        self.mail_closer: Callable[[], object] = lambda: None
        self.mail_used_at = 0.0  # time.monotonic() of the last send through self.mail
        self.owner = onboarding.Owner.current(self.instance)
        self.breaker = onboarding.Breaker(self.owner)
        self.mail_failures = 0  # failed tries of the mail server in a row
        self.mail_retry_at = 0.0  # time.monotonic() before which the server is left alone
        # Holding our PID lock proves any predecessor under our lock key is dead.
        released = onboarding.claims_release_predecessors(owner=self.owner)
        if released:
            self.logger.info("took back %d claims of a dead predecessor", released,
                             extra={"action": "claims_reclaimed"})

    def tick(self, now: datetime) -> TickResult:
        counts = {outcome: 0 for outcome in Outcome}
        if self.mail is not None and time.monotonic() - self.mail_used_at >= self.mail_keep_alive:
            self.mail_close()
        if self.mail_failures and time.monotonic() < self.mail_retry_at:
            return self.summary(counts, suffix="mail server unavailable, waiting to try again")
        owner = self.owner
        batch_size = settings.ONBOARDING_BATCH_SIZE
        claimed_any = False
        checked = False
        try:
            while not self.stop_requested():
                batch = onboarding.customers_claim(owner=owner, now=now, limit=batch_size)
                if not batch:
                    break
                claimed_any = True
                if self.mail is None:
                    # Made only when there is mail to send: an idle tick touches no server.
                    self.mail = onboarding.mail_connection()
                    # A daemon dropped without teardown (a test's, say) still ends its session.
                    self.mail_closer = weakref.finalize(self, onboarding.mail_close, self.mail)
                elif not checked and not onboarding.mail_alive(self.mail):
                    # The server dropped it while we were idle: the next send opens a new session.
                    onboarding.mail_close(self.mail)
                checked = True
                mail = self.mail
                # While a reply to the end of DATA is awaited, the claims stay ours and the tick alive.
                keeper = onboarding.ClaimKeeper(owner, progress=lambda: self.progress(0))
                for customer in batch:
                    if self.stop_requested():
                        break
                    if not keeper.holds(customer):
                        self.logger.warning("customer %s was taken over while this process was stalled; "
                                            "not sending", customer.pk, extra={"action": "claim_lost"})
                        continue
                    keeper.renew_if_due()
                    self.in_flight = customer.pk
                    try:
                        result = onboarding.customer_onboard(customer=customer, owner=owner, mail=mail,
                                                             breaker=self.breaker, keepalive=keeper.keepalive)
                    except onboarding.MailServerUnavailable as exc:
                        self.breaker.held.clear()  # given back below with every other claim
                        self.mail_close()
                        self.mail_unavailable(exc)
                        return self.summary(counts, suffix="mail server unavailable")
                    finally:
                        self.in_flight = None
                        self.mail_used_at = time.monotonic()
                    self.progress()
                    if result.outcome is Outcome.HELD:
                        continue
                    self.settle(counts)
                    self.mail_available()  # it answered, and not by refusing everyone
                    counts[result.outcome] += 1
                    if result.outcome in FAILURES:
                        self.record_failure(result)
                        # The SMTP session may be in any state; the next send opens a new one.
                        onboarding.mail_close(mail)
                now = timezone.now()
            if not self.stop_requested():
                self.settle(counts)  # nobody else to try: the refusals held back were the customers' own
        except BaseException:
            self.mail_close()  # interrupted in the middle of a session: don't reuse it
            raise
        finally:
            self.breaker.held.clear()  # whatever is left was interrupted: its claim goes back below
            # Whatever a stop or an outage interrupted goes back at once, not after the lease.
            if claimed_any:
                onboarding.claims_release(owner=owner)
        return self.summary(counts)

    def teardown(self) -> None:
        self.mail_close()

    def mail_close(self) -> None:
        """Close the SMTP connection kept across ticks, if any; never raises."""
        self.mail = None
        self.mail_closer()  # runs onboarding.mail_close once, then does nothing

    def settle(self, counts: dict[Outcome, int]) -> None:
        for failure in self.breaker.settle(timezone.now()):
            counts[failure.outcome] += 1
            self.record_failure(failure)

    @staticmethod
    def summary(counts: dict[Outcome, int], suffix: str = "") -> TickResult:
        onboarded = counts[Outcome.ONBOARDED]
        failed = counts[Outcome.RETRY] + counts[Outcome.FAILED]
        unknown = counts[Outcome.UNKNOWN] + counts[Outcome.ATTENTION]
        text = f"onboarded {onboarded} customer{'s' if onboarded != 1 else ''}"
        if failed:
            text += f", {failed} failed"
        if unknown:
            text += f", {unknown} unconfirmed"
        if suffix:
            text += f"; {suffix}"
        return TickResult(processed=onboarded + failed + unknown, summary=text)

    def record_failure(self, result: onboarding.OnboardResult) -> None:
        customer = result.customer
        action, next_step = FAILURE_ACTIONS[result.outcome]
        self.logger.warning(
            "onboarding customer %s failed (attempt %d), %s: %s",
            customer.pk, customer.attempts, next_step, result.error,
            extra={"action": action, "customer_id": customer.pk},
        )
        # A fresh exception without the traceback: the original's frames hold the address.
        reporting.capture(OnboardingFailure(f"customer {customer.pk}: {result.error}"),
                          daemon=self.name, customer_id=customer.pk)

    def mail_unavailable(self, exc: onboarding.MailServerUnavailable) -> None:
        self.mail_failures += 1
        self.mail_retry_at = time.monotonic() + onboarding.mail_outage_delay(self.mail_failures)
        if self.mail_failures == 1:
            self.logger.warning("mail server unavailable, will retry: %s", exc, extra={"action": "mail_unavailable"})
            # A fresh exception: the original's chain has frames that hold addresses.
            reporting.capture(onboarding.MailServerUnavailable(str(exc)), daemon=self.name)

    def mail_available(self) -> None:
        if self.mail_failures:
            self.mail_failures = 0
            self.logger.info("mail server available again", extra={"action": "mail_available"})

    def work_in_progress(self) -> str:
        # Its claim is released by the lease (or at once by our restart); the email may
        # go out again, which the Message-ID lets mail systems drop.
        in_flight = self.in_flight
        return f"the welcome email to customer {in_flight}" if in_flight is not None else ""

    def status(self) -> str:
        return selectors.onboarding_status_line()


@register
class DigestDaemon(ScheduledDaemon):
    """Sends the daily digest at 08:00 in settings.TIME_ZONE; a digest missed while down goes out at start."""

    name = "digest"
    # The digest is due at 08:00 sharp; looking every 10 s is precise enough and cheap.
    interval = 10.0

    @job(cron="0 8 * * *", catch_up=True)
    def daily_digest(self, now: datetime) -> int:
        return digest_send(now=now, log=self.logger)

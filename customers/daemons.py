"""The showcase's daemons: onboarding (each new customer, exactly once) and the daily digest."""
from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from daemons import Daemon, TickResult, register, reporting
from daemons.jobs import ScheduledDaemon, job

from . import selectors
from .digest import digest_send
from .models import Customer
from .onboarding import claims, mail, onboard
from .onboarding.breaker import Breaker
from .onboarding.failures import MailServerUnavailable
from .onboarding.owner import DAEMON_NAME, Owner
from .onboarding.records import OnboardResult, Outcome
from .onboarding.retry import mail_outage_delay

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


class MailLane:
    """One of the daemon's SMTP connections, kept across ticks, and the customer whose email goes through it now.

    Its connection is made only when there is mail to send, so an idle tick touches no
    server. One left idle since an earlier tick is trusted without asking the server first; if
    the server had dropped it, the send fails before any of the message went out and is made
    again on a new session. `send` touches no database, so a lane may send from any thread.
    """

    def __init__(self) -> None:
        self.mail: BaseEmailBackend | None = None
        self.closer: Callable[[], object] = lambda: None
        self.used_at = 0.0  # time.monotonic() of the last send through it
        self.checked = False  # its session served (or was made) in this tick
        # Whose email is going through it; read by work_in_progress() from another thread.
        self.customer: Customer | None = None
        # With several lanes, each sends from a thread of its own, handed one customer at a time.
        self.thread: threading.Thread | None = None
        self.inbox: queue.SimpleQueue[Customer | None] = queue.SimpleQueue()

    def send(self, customer: Customer, keepalive: Callable[[], object] | None) -> Exception | None:
        """Send `customer` the welcome email; return what the send raised, or None if the server took it."""
        # A session idle since an earlier tick may have been dropped by the server meanwhile. Rather than
        # ask first (a NOOP: one more round trip on every wake-up's latency), send, and should the session
        # prove dead before any of the message went out, send once more on a new one.
        kept = getattr(self.mail, "connection", None) is not None and not self.checked
        self.checked = True
        try:
            try:
                onboard.welcome_send(customer, self.connection(), keepalive=keepalive)
            except Exception as exc:
                if not (kept and self.mail is not None and mail.session_dropped(self.mail, exc)):
                    raise
                mail.mail_close(self.mail)
                onboard.welcome_send(customer, self.mail, keepalive=keepalive)
        # Everything: whatever a send raises (SMTP, socket, a template's error) is classified by
        # `send_record` in the daemon's thread, and a lane's thread must hand it over, not die of it.
        except Exception as exc:  # noqa: BLE001
            return exc
        return None

    def hand(self, customer: Customer, sent: queue.SimpleQueue[tuple[MailLane, Exception | None]]) -> None:
        """Send `customer` the welcome email from this lane's own thread; its outcome is put in `sent`."""
        if self.thread is None:
            self.thread = threading.Thread(target=self.serve, args=(sent,), name="onboarding-send", daemon=True)
            self.thread.start()
        self.inbox.put(customer)

    def serve(self, sent: queue.SimpleQueue[tuple[MailLane, Exception | None]]) -> None:
        while (customer := self.inbox.get()) is not None:
            sent.put((self, self.send(customer, None)))

    def thread_end(self) -> None:
        if self.thread is not None:
            self.inbox.put(None)
            self.thread.join()
            self.thread = None

    def connection(self) -> BaseEmailBackend:
        if self.mail is None:
            self.mail = mail.mail_connection()
            # A daemon dropped without teardown (a test's, say) still ends its session.
            self.closer = weakref.finalize(self, mail.mail_close, self.mail)
        return self.mail

    def close(self) -> None:
        """Close the connection, if any; never raises."""
        self.mail = None
        self.closer()  # runs mail.mail_close once, then does nothing


@register
class OnboardingDaemon(Daemon):
    """Claims waiting customers in batches and sends each a welcome email.

    A tick keeps claiming until nobody is due, so a backlog clears at full speed. The
    lease on claims is renewed while a batch runs, so a slow mail server can't make a
    claim expire under us. When the mail server is down, or refuses everyone (see
    `onboarding.Breaker`), the tick gives its claims back and ends, and later ticks wait
    with backoff before trying the server again; no customer's attempts are used up.

    ONBOARDING_SEND_CONCURRENCY emails go out at once, each through its own `MailLane`
    and thread, so the waits for the server's replies overlap; this thread alone claims
    and records, and a lane takes its next customer only once its last one is recorded.
    So a kill leaves at most that many emails sent and not recorded: the ones sent again.
    With a concurrency of 1 the one lane sends from this thread.

    A lane's SMTP connection serves tick after tick, so a wake-up for one signup costs no
    connection set-up. It is closed after `mail_keep_alive` seconds without mail, after
    any failed send (its session may be in any state), and at teardown.
    """

    name = DAEMON_NAME
    interval = settings.ONBOARDING_INTERVAL_SECONDS
    # Seconds without mail after which an SMTP connection is closed; a server drops idle sessions anyway.
    mail_keep_alive = 60.0

    def setup(self) -> None:
        concurrency = settings.ONBOARDING_SEND_CONCURRENCY
        self.lanes = [MailLane() for _ in range(concurrency)]
        self.threaded = concurrency > 1
        self.sending: set[MailLane] = set()  # the lanes with a send under way, whose outcome is not yet recorded
        self.sent: queue.SimpleQueue[tuple[MailLane, Exception | None]] = queue.SimpleQueue()  # their outcomes
        self.outage: MailServerUnavailable | None = None  # met in this tick
        self.claimed_any = False  # this tick claimed someone: what is left is given back at its end
        self.owner = Owner.current(self.instance)
        self.breaker = Breaker(self.owner)
        self.mail_failures = 0  # failed tries of the mail server in a row
        self.mail_retry_at = 0.0  # time.monotonic() before which the server is left alone
        # Holding our PID lock proves any predecessor under our lock key is dead.
        released = claims.claims_release_predecessors(owner=self.owner)
        if released:
            self.logger.info("took back %d claims of a dead predecessor", released,
                             extra={"action": "claims_reclaimed"})

    def tick(self, now: datetime) -> TickResult:
        counts = {outcome: 0 for outcome in Outcome}
        self.lanes_refresh()
        if self.mail_failures and time.monotonic() < self.mail_retry_at:
            return self.summary(counts, suffix="mail server unavailable, waiting to try again")
        self.claimed_any = False
        self.outage = None
        try:
            self.backlog_send(now, counts)
            if self.outage is not None:
                self.outage_begin(self.outage)
                return self.summary(counts, suffix="mail server unavailable")
            if not self.stop_requested():
                self.settle(counts)  # nobody else to try: the refusals held back were the customers' own
        except BaseException:
            self.sends_abandon()
            raise
        finally:
            self.breaker.held.clear()  # whatever is left was interrupted: its claim goes back below
            # Whatever a stop or an outage interrupted goes back at once, not after the lease.
            if self.claimed_any:
                claims.claims_release(owner=self.owner)
        return self.summary(counts)

    def lanes_refresh(self) -> None:
        """Close the lanes' connections idle for `mail_keep_alive` seconds; the others are checked again."""
        for lane in self.lanes:
            if lane.mail is not None and time.monotonic() - lane.used_at >= self.mail_keep_alive:
                lane.close()
            lane.checked = False

    def backlog_send(self, now: datetime, counts: dict[Outcome, int]) -> None:
        """Claim batch after batch and send each, until nobody is due, a stop is asked for or an outage met."""
        batch_size = settings.ONBOARDING_BATCH_SIZE
        while not self.stop_requested() and self.outage is None:
            batch = claims.customers_claim(owner=self.owner, now=now, limit=batch_size)
            if not batch:
                break
            self.claimed_any = True
            self.batch_send(batch, counts)
            now = timezone.now()

    def batch_send(self, batch: list[Customer], counts: dict[Outcome, int]) -> None:
        """Send to every customer of `batch` that is still ours, and record each before returning."""
        # While replies are awaited, the claims stay ours and the tick alive.
        keeper = claims.ClaimKeeper(self.owner, progress=lambda: self.progress(0))
        free = list(self.lanes)
        for customer in batch:
            while not free and self.outage is None:
                free += self.sends_collect(keeper, counts)
            if self.stop_requested() or self.outage is not None:
                break
            if not keeper.holds(customer):
                self.logger.warning("customer %s was taken over while this process was stalled; "
                                    "not sending", customer.pk, extra={"action": "claim_lost"})
                continue
            keeper.renew_if_due()
            # A batch of one (a signup's wake-up) is sent from here: handing it to a thread only adds
            # two thread switches to its latency.
            self.send_start(free.pop(), customer, keeper, inline=len(batch) == 1)
        while self.sending:  # what went out is recorded before anything else is claimed
            self.sends_collect(keeper, counts)

    def outage_begin(self, exc: MailServerUnavailable) -> None:
        """End the tick on a mail outage: drop the held refusals (their claims go back) and every session."""
        self.breaker.held.clear()  # given back with every other claim
        self.mail_close()
        self.mail_unavailable(exc)

    def sends_abandon(self) -> None:
        """After an interruption: wait for the sends still going out, and drop every session."""
        # Sends still going out end within their deadline; unrecorded, they are sent again later.
        while self.sending:
            self.sending.discard(self.sent.get()[0])
        self.mail_close()  # interrupted in the middle of a session: don't reuse it

    def send_start(self, lane: MailLane, customer: Customer, keeper: claims.ClaimKeeper, *,
                   inline: bool = False) -> None:
        """Start sending `customer` the welcome email through `lane` (`inline`: send it now, from this thread);
        `sends_collect` records it."""
        lane.customer = customer
        self.sending.add(lane)
        if not self.threaded or inline:
            # One at a time, in this thread: it keeps the claims alive itself while a reply is awaited.
            self.sent.put((lane, lane.send(customer, keeper.keepalive)))
        else:
            lane.hand(customer, self.sent)

    def sends_collect(self, keeper: claims.ClaimKeeper, counts: dict[Outcome, int]) -> list[MailLane]:
        """Wait until a send ends (the claims kept alive meanwhile), record each that ended; return their lanes."""
        while True:
            try:
                done = [self.sent.get(timeout=1.0)]
                break
            except queue.Empty:
                keeper.keepalive()
        with suppress(queue.Empty):
            while True:
                done.append(self.sent.get_nowait())
        for lane, error in done:
            self.sending.discard(lane)
            self.send_settle(lane, error, counts)
        return [lane for lane, _ in done]

    def send_settle(self, lane: MailLane, error: Exception | None, counts: dict[Outcome, int]) -> None:
        """Record how the send through `lane` went; an outage is kept in `self.outage` for the tick to end on."""
        customer, lane.customer = lane.customer, None
        assert customer is not None, "a lane in self.sending has a customer"
        lane.used_at = time.monotonic()
        self.progress()
        try:
            result = onboard.send_record(customer=customer, owner=self.owner, error=error,
                                            breaker=self.breaker)
        except MailServerUnavailable as exc:
            lane.close()
            self.outage = self.outage or exc
            return
        if result.outcome is Outcome.HELD:
            return
        self.settle(counts)
        if self.outage is None:
            self.mail_available()  # it answered, and not by refusing everyone
        counts[result.outcome] += 1
        if result.outcome in FAILURES:
            self.record_failure(result)
            # The SMTP session may be in any state; the next send opens a new one.
            lane.close()

    def teardown(self) -> None:
        for lane in self.lanes:
            lane.thread_end()
        self.mail_close()

    def mail_close(self) -> None:
        """Close every SMTP connection kept across ticks; never raises."""
        for lane in self.lanes:
            lane.close()

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

    def record_failure(self, result: OnboardResult) -> None:
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

    def mail_unavailable(self, exc: MailServerUnavailable) -> None:
        self.mail_failures += 1
        self.mail_retry_at = time.monotonic() + mail_outage_delay(self.mail_failures)
        if self.mail_failures == 1:
            self.logger.warning("mail server unavailable, will retry: %s", exc, extra={"action": "mail_unavailable"})
            # A fresh exception: the original's chain has frames that hold addresses.
            reporting.capture(MailServerUnavailable(str(exc)), daemon=self.name)

    def mail_available(self) -> None:
        if self.mail_failures:
            self.mail_failures = 0
            self.logger.info("mail server available again", extra={"action": "mail_available"})

    def work_in_progress(self) -> str:
        # Its claim is released by the lease (or at once by our restart); the email may
        # go out again, which the Message-ID lets mail systems drop.
        in_flight = [customer.pk for lane in self.lanes if (customer := lane.customer) is not None]
        if len(in_flight) > 1:
            return f"the welcome emails to customers {', '.join(map(str, in_flight))}"
        return f"the welcome email to customer {in_flight[0]}" if in_flight else ""

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

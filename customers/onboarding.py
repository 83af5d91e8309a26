"""Onboarding customers: claims and their leases, sending the welcome email, recording it or its failure."""
from __future__ import annotations

import enum
import functools
import hashlib
import os
import random
import re
import secrets
import selectors
import smtplib
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from email.policy import Compat32
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends import smtp
from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError, connection, models, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.functions import Now
from django.template.loader import get_template
from django.utils import timezone

from daemons import conf, reporting, wakeup
from daemons.cluster import heartbeat

from .models import Customer, Onboarding, OnboardingState

if TYPE_CHECKING:
    from typing_extensions import Buffer

# The onboarding daemon's registered name: signups and retries wake it by this name.
DAEMON_NAME = "onboarding"


def onboarding_wake() -> None:
    """Ask the running onboarding daemons to look for work now; never blocks or raises."""
    wakeup.wake(DAEMON_NAME)


def boot_id() -> str:
    """This kernel's boot id, shared by every container on the host; "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def instance_lock_key(instance: int, run_dir: Path | None = None) -> str:
    """A short name for the PID lock of onboarding instance `instance` on this host.

    Built from the boot id and the run directory's device and inode, not from hostnames:
    two checkouts on one host, or two containers sharing the host's network and hostname,
    have different run directories and so different keys, while a restart of the same
    instance (same kernel, same run directory) gets the same key.
    """
    directory = Path(run_dir) if run_dir is not None else conf.run_dir()
    try:
        stat = directory.stat()
        where = f"{stat.st_dev}:{stat.st_ino}"
    except OSError:  # not created yet (a daemon creates it before it locks): the path will do
        where = str(directory.resolve())
    raw = f"{boot_id()}:{where}:{DAEMON_NAME}:{instance}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: the PID lock of a daemon instance, its host and number (for people), and one process.

    `lock_key` (see `instance_lock_key`) is shared by every process that ever held that
    lock, so a process holding it knows any other claim with that key is a dead
    predecessor's. `token` is unique to this process (its PID and a random part, as PIDs
    repeat across containers and reboots). `str(owner)`, stored in `claimed_by`, is
    `lock_key/host/instance/pid-random`: `process_marker` is the part of it that the
    process's heartbeat row (host, instance, pid) names.
    """

    host: str
    instance: int
    lock_key: str
    token: str

    @property
    def prefix(self) -> str:
        return f"{self.lock_key}/"

    def __str__(self) -> str:
        return f"{self.prefix}{self.host}/{self.instance}/{self.token}"

    @property
    def pid(self) -> int:
        return int(self.token.partition("-")[0])

    def touch_heartbeat(self) -> None:
        """Stamp the heartbeat row of the process this owner is (see `heartbeat.touch`)."""
        heartbeat.touch(DAEMON_NAME, self.instance, host=self.host, pid=self.pid)

    @classmethod
    def current(cls, instance: int = 0, run_dir: Path | None = None) -> Owner:
        """The owner for this process, running onboarding instance `instance`."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        return cls(socket.gethostname(), instance, instance_lock_key(instance, run_dir), token)


def process_marker(host: str, instance: int, pid: int) -> str:
    """The part of `str(owner)` that names the process with this heartbeat row (see `Owner`)."""
    return f"/{host}/{instance}/{pid}-"


def held_by_gone_processes(now: datetime | None = None) -> Q | None:
    """Claims held by onboarding processes whose heartbeat says they stopped or are dead, or None if none is.

    A dead instance (no heartbeat for three heartbeat periods: `daemons.heartbeat.instance_state`)
    crashed, hangs or is cut off: its claims are free at once rather than when their leases
    end. Should it come back, it can record nothing for them, having lost the claims.
    """
    gone = heartbeat.gone(DAEMON_NAME, now).values_list("host", "instance", "pid")
    markers = [process_marker(host, instance, pid) for host, instance, pid in gone]
    if not markers:
        return None
    held = Q()
    for marker in markers:
        held |= Q(claimed_by__contains=marker)
    return held


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
    clock, it is held under `owner`'s lock key (a dead predecessor: holding the PID lock
    proves it dead), or it is held by a process whose heartbeat says it is dead or stopped
    (`held_by_gone_processes`). Each claim records `owner` and a lease ending `lease_end()`.

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
    free = Q(claimed_by="") | Q(claim_expires_at__lt=Now()) | Q(claimed_by__startswith=owner.prefix)

    def claimable() -> QuerySet[Customer]:
        gone = held_by_gone_processes()
        return due.filter(free | gone if gone is not None else free)

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
        held = Customer.objects.filter(claimed_by=str(owner), onboarded_at__isnull=True)
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
        return Customer.objects.filter(
            claimed_by=str(owner), onboarded_at__isnull=True, claim_expires_at__gte=Now()
        ).update(claim_expires_at=lease_end())


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
            Customer.objects.filter(claimed_by__startswith=owner.prefix, onboarded_at__isnull=True)
            .exclude(claimed_by=str(owner))
            .update(claimed_by="", claim_expires_at=None)
        )


def welcome_message_id(customer: Customer) -> str:
    """The same Message-ID for every copy of a customer's welcome email.

    It is derived from the customer alone, so a copy sent again after a crash carries
    the ID of the first and mail systems can drop it as a repeat.
    """
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(">") or "localhost"
    return f"<welcome-{customer.pk}-{int(customer.created_at.timestamp())}@{domain}>"


class QuickFoldPolicy(Compat32):
    """The compat32 policy Django's messages use, writing a header that needs no folding or encoding as it is.

    Such a header (printable ASCII that fits on one line) comes out of compat32's `Header`
    machinery unchanged, at a cost of about 20 us each, a dozen times per message; any
    other header still takes that path.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and value.replace("\t", " ").isprintable()
                and len(name) + 2 + len(value) <= (self.max_line_length or 78)):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc]  # compat32's, untyped in typeshed


QUICK_FOLD = QuickFoldPolicy()


class WelcomeEmail(EmailMultiAlternatives):
    """Django's message, flattened with less work: its headers through `QuickFoldPolicy`, its boundary chosen here.

    The stdlib's generator compiles a regular expression per message to pick a boundary
    that appears in no part; a random one checked against the parts' text is as safe.
    A message that isn't compat32 (Django's own email stack may change) is left as built.
    """

    def message(self) -> Message:  # type: ignore[override]
        message = super().message()
        if type(message.policy) is Compat32:
            message.policy = QUICK_FOLD
            parts = [self.body, *(content for content, _ in self.alternatives)]
            boundary = f"==============={secrets.token_hex(12)}=="
            while any(boundary in str(part) for part in parts):
                boundary = f"==============={secrets.token_hex(12)}=="
            message.set_boundary(boundary)
        return message


@functools.cache
def welcome_templates() -> tuple[Any, ...]:
    """The subject, text and HTML templates of the welcome email, compiled once per process."""
    return (get_template("emails/welcome_subject.txt"), get_template("emails/welcome.txt"),
            get_template("emails/welcome.html"))


def welcome_email(customer: Customer) -> EmailMultiAlternatives:
    context = {"customer": customer}
    subject, text, html = welcome_templates()
    message = WelcomeEmail(
        subject=subject.render(context).strip(),
        body=text.render(context),
        to=[customer.email],
        headers={"Message-ID": welcome_message_id(customer)},
    )
    message.attach_alternative(html.render(context), "text/html")
    return message


class FinalReplySMTP(smtplib.SMTP):
    """An SMTP session that knows when a message's end of DATA went out, and waits long for the reply to it.

    From the moment the final "." is sent (`dot_sent`), the server may have the message:
    a failure then is an unknown outcome, not a failure to send. The reply to it is
    awaited for ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS (RFC 5321 section 4.5.3.2.6
    advises 10 minutes, as content filters may take minutes), while `keepalive` is
    called about once a second to keep the claim and the heartbeat fresh. Every other
    read keeps the connection's short timeout.
    """

    dot_sent = False
    awaiting_final_reply = False
    reply_deadline: float | None = None  # time.monotonic() past which the final reply is given up on
    keepalive: Callable[[], object] | None = None

    def sendmail(self, *args, **kwargs):
        self.dot_sent = self.awaiting_final_reply = False
        self.reply_deadline = None
        return super().sendmail(*args, **kwargs)

    def send(self, s: Buffer | str) -> None:
        super().send(s)
        # Only a message body ends so: smtplib sends it, dot-terminated, in one call.
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.dot_sent = self.awaiting_final_reply = True
            self.reply_deadline = time.monotonic() + settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS

    def getreply(self) -> tuple[int, bytes]:
        if self.awaiting_final_reply:
            self.awaiting_final_reply = False
            self.final_reply_wait()
        return super().getreply()

    def final_reply_wait(self) -> None:
        """Wait until the reply to the end of DATA begins to arrive; past the reply deadline, close and raise."""
        sock, deadline = self.sock, self.reply_deadline
        if sock is None or deadline is None:
            return
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise smtplib.SMTPServerDisconnected(
                        f"no reply to the end of DATA within {settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS:g} s")
                if selector.select(min(remaining, 1.0)):
                    return
                if self.keepalive is not None:
                    self.keepalive()


class FinalReplySMTP_SSL(FinalReplySMTP, smtplib.SMTP_SSL):
    """`FinalReplySMTP` over implicit TLS."""


class SmtpBackend(smtp.EmailBackend):
    """Django's SMTP backend with `FinalReplySMTP` sessions."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return FinalReplySMTP_SSL if self.use_ssl else FinalReplySMTP


DJANGO_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def mail_connection() -> BaseEmailBackend:
    """A connection to the mail server, not yet open, whose every read waits at most ONBOARDING_SMTP_TIMEOUT_SECONDS.

    Django's SMTP backend is replaced by `SmtpBackend`, which tells an unanswered end of
    DATA apart and waits for its reply as long as RFC 5321 advises.
    """
    backend = f"{__name__}.SmtpBackend" if settings.EMAIL_BACKEND == DJANGO_SMTP_BACKEND else None
    return get_connection(backend, timeout=settings.ONBOARDING_SMTP_TIMEOUT_SECONDS)


def mail_alive(mail: BaseEmailBackend) -> bool:
    """False if `mail` holds an SMTP session that no longer answers a NOOP; True if it answers or none is open."""
    session = getattr(mail, "connection", None)
    if session is None:
        return True
    try:
        return session.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def mail_close(mail: BaseEmailBackend) -> None:
    """Close `mail`, whatever state its session is in; never raises."""
    with suppress(Exception):
        mail.close()
    session = getattr(mail, "connection", None)
    if session is not None:  # close() raised before forgetting the session
        with suppress(Exception):
            session.close()
        mail.connection = None  # type: ignore[attr-defined]


class SendDeadlineExceeded(TimeoutError):
    """Sending one message took longer than ONBOARDING_SEND_DEADLINE_SECONDS (a mail outage)."""


class SendWatch:
    """Enforces send deadlines for one sending thread, with one long-lived thread instead of one per message.

    `arm` starts a send's deadline and `disarm` ends it. The thread sleeps until the
    earliest deadline it knows of and is woken only when an armed deadline comes sooner
    than that, so a backlog of quick sends costs it about one wake-up per deadline
    period. Past the deadline it shuts the connection's socket down (again every 50 ms,
    as the socket may appear only after a connect in progress) until the send is
    disarmed. Once a `FinalReplySMTP` session sent the end of DATA, the deadline is its
    reply deadline (plus a little, so the session's own clearer error comes first).
    After SEND_WATCH_IDLE_SECONDS with nothing armed it ends; `arm` then returns False
    and the caller starts another.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.mail: BaseEmailBackend | None = None
        self.until: float | None = None  # time.monotonic() of the armed send's deadline
        self.expired = False
        self.wakes_at = float("inf")  # when the thread looks again unless notified
        self.ended = False
        threading.Thread(target=self.run, name="send-deadline", daemon=True).start()

    def arm(self, mail: BaseEmailBackend, deadline: float) -> bool:
        """Start a send through `mail` that must end within `deadline` seconds; False if this watch has ended."""
        with self.cond:
            if self.ended:
                return False
            self.mail, self.until, self.expired = mail, time.monotonic() + deadline, False
            if self.until < self.wakes_at:
                self.cond.notify()
            return True

    def disarm(self) -> bool:
        """End the send; True if its deadline passed. From now on the thread leaves its connection alone."""
        with self.cond:
            self.mail = self.until = None
            return self.expired

    def run(self) -> None:
        with self.cond:
            busy_at = time.monotonic()
            while True:
                now = time.monotonic()
                if self.until is None:
                    if now - busy_at >= SEND_WATCH_IDLE_SECONDS:
                        self.ended = True
                        return
                    self.wakes_at = busy_at + SEND_WATCH_IDLE_SECONDS
                elif now < (until := max(self.until, self.reply_deadline())):
                    busy_at, self.wakes_at = now, until
                else:
                    busy_at, self.expired, self.wakes_at = now, True, now + 0.05
                    sock = getattr(getattr(self.mail, "connection", None), "sock", None)
                    if sock is not None:
                        with suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                self.cond.wait(self.wakes_at - now)


    def reply_deadline(self) -> float:
        """When the armed send's session gives up on the reply to the end of DATA, or 0 before that."""
        deadline = getattr(getattr(self.mail, "connection", None), "reply_deadline", None)
        return 0.0 if deadline is None else deadline + 2.0


# A sending thread's SendWatch ends after this many seconds without a send.
SEND_WATCH_IDLE_SECONDS = 60.0
_send_watches = threading.local()


def send_watch_arm(mail: BaseEmailBackend, deadline: float) -> SendWatch:
    """This thread's SendWatch (started if there is none, it ended, or the process forked), armed for `mail`."""
    watch = getattr(_send_watches, "watch", None)
    if watch is None or watch.pid != os.getpid() or not watch.arm(mail, deadline):
        watch = _send_watches.watch = SendWatch()
        watch.arm(mail, deadline)
    return watch


class SendOutcomeUnknown(Exception):
    """The message's end of DATA went out but no reply came: the server may or may not have it."""


def message_send(message: EmailMultiAlternatives, mail: BaseEmailBackend, deadline: float | None = None,
                 keepalive: Callable[[], object] | None = None) -> None:
    """Send `message` through `mail` (opened here if needed), all of it within `deadline` seconds.

    The per-read timeout alone lets a server that answers slowly, or trickles a reply,
    hold one message for many times that timeout. Past the deadline (default
    ONBOARDING_SEND_DEADLINE_SECONDS) this thread's `SendWatch` shuts the connection's
    socket down, which ends any read at once; the connection is then closed and
    `SendDeadlineExceeded` raised. Sending is so bounded, which is what lets a lease of
    three deadlines outlast any send between two renewals.

    The one exception is the reply to the end of DATA (see `FinalReplySMTP`): it is
    awaited for ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS, with `keepalive` called about
    once a second meanwhile to renew the claim. Any failure once the end of DATA went out
    (no reply in time, a reset, a hang-up) raises `SendOutcomeUnknown`.
    """
    deadline = settings.ONBOARDING_SEND_DEADLINE_SECONDS if deadline is None else deadline
    watch = send_watch_arm(mail, deadline)
    session = None
    try:
        mail.open()
        session = getattr(mail, "connection", None)
        if isinstance(session, FinalReplySMTP):
            session.keepalive = keepalive
        message.connection = mail
        message.send(fail_silently=False)
    except Exception as exc:
        expired = watch.disarm()
        if isinstance(session, FinalReplySMTP) and session.dot_sent:
            raise SendOutcomeUnknown(f"the mail server took the message but never confirmed it: "
                                     f"{error_describe(exc)}") from exc
        if expired:
            raise SendDeadlineExceeded(f"sending one message took longer than {deadline:g} s") from exc
        raise
    finally:
        if isinstance(session, FinalReplySMTP):
            # A kept session's next send is armed before its sendmail() resets this; seen then, a stale
            # reply deadline would put that send's own deadline minutes away.
            session.keepalive = session.reply_deadline = None
        if watch.disarm():
            with suppress(Exception):
                mail.close()


class MailServerUnavailable(Exception):
    """The mail server can't be reached or refuses everyone; no customer is to blame."""


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
    except Exception as exc:
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


class Breaker:
    """Tells a mail server that refuses everyone from customers whose addresses are bad.

    A relay without its credentials, or a provider's sandbox, answers every recipient
    with a permanent 5xx; failing each customer would fail the whole backlog. So a
    permanent refusal is held back, nothing recorded, until the next customer's outcome:

    - anything else (an accepted message, a temporary failure) ends the streak, and the
      held refusals are the customers' own: `settle` records them;
    - ONBOARDING_BREAKER_THRESHOLD different customers refused in a row, or one 5.7.x
      (policy) reply, mean the server is the problem: the breaker trips. The held
      customers are given back with no attempt counted, due again after a short delay so
      that others are tried first, and `MailServerUnavailable` is raised.

    A customer given back this way is a suspect: refused again once the server has
    accepted another message since, the refusal is its own and fails it at once. So a
    few bad addresses that sort next to each other can't stall the queue for ever. Each
    trip also counts as an unknown outcome for the customers it gives back: the last few
    of a queue, refused with nobody else to prove the server, are marked as needing
    attention after ONBOARDING_MAX_UNKNOWN_OUTCOMES trips instead of being held for ever.
    A policy reply blames the server alone, and counts nothing.
    """

    def __init__(self, owner: Owner, threshold: int | None = None) -> None:
        self.owner = owner
        self.threshold = settings.ONBOARDING_BREAKER_THRESHOLD if threshold is None else threshold
        self.held: list[tuple[Customer, BaseException]] = []
        self.suspects: set[int] = set()
        self.proven = False  # the server accepted a message since the last trip

    def accepted(self) -> None:
        """The server accepted a message."""
        self.proven = True

    def refused(self, customer: Customer, exc: BaseException, now: datetime) -> bool:
        """Take a permanent refusal: True if it is held back, False if the customer is to blame now.

        Raises `MailServerUnavailable` when the refusal trips the breaker.
        """
        if customer.pk in self.suspects and self.proven:
            self.suspects.discard(customer.pk)
            return False
        self.held.append((customer, exc))
        policy = is_policy_refusal(exc)
        if policy or len({held.pk for held, _ in self.held}) >= self.threshold:
            self.trip(now, reason="a policy refusal (5.7.x)" if policy else
                      f"{len(self.held)} different recipients refused in a row", server_to_blame=policy)
        return True

    def trip(self, now: datetime, *, reason: str, server_to_blame: bool = False) -> None:
        held, self.held = self.held, []
        ids = [customer.pk for customer, _ in held]
        last_error = error_describe(held[-1][1])
        with transaction.atomic():
            for customer, exc in held:
                # Unless a policy reply put the blame on the server, whose refusal it was is unknown: counted as
                # an unknown outcome, so customers refused trip after trip with nobody else to prove the server
                # (the last few of a queue, say) are not held for ever.
                Customer.objects.filter(pk=customer.pk, claimed_by=str(self.owner), onboarded_at__isnull=True).update(
                    claimed_by="", claim_expires_at=None, next_attempt_at=now + retry_delay(1),
                    last_error=error_describe(exc), unknown_outcomes=F("unknown_outcomes") + int(not server_to_blame))
            Customer.objects.filter(pk__in=ids, unknown_outcomes__gte=settings.ONBOARDING_MAX_UNKNOWN_OUTCOMES,
                                    claimed_by="", onboarded_at__isnull=True, attention_at__isnull=True).update(
                attention_at=now, next_attempt_at=None, attention_reason=(
                    "refused every time it was tried, by a mail server that accepted nobody else meanwhile (the "
                    "address may be bad, or the server may refuse everyone); check, then retry. Last: "
                    f"{last_error}")[:2000])
        self.suspects.update(ids)
        self.proven = False
        raise MailServerUnavailable(f"the mail server refuses everyone: {reason}; last reply: {last_error}")

    def settle(self, now: datetime) -> list[OnboardResult]:
        """Record the held refusals as the customers' own failures; return what was recorded."""
        results = []
        for customer, exc in self.held:
            row = customer_onboarding_failed(customer=customer, owner=self.owner, error=exc, now=now)
            if row is not None:
                results.append(OnboardResult(Outcome.FAILED if row.failed_at else Outcome.RETRY, row,
                                             error_describe(exc)))
        self.held.clear()
        return results


def customer_onboarding_complete(*, customer: Customer, owner: Owner, now: datetime) -> bool:
    """Commit the onboarding record and `onboarded_at` together, if `owner` holds the claim and its lease.

    Returns False, changing nothing, when the claim was lost to another process, its lease
    ended by the database's clock (a process cut off past its lease records nothing: another
    may be onboarding the customer), or the customer is already onboarded. Two statements,
    written once per process (`completion_statements`): this runs once per customer.
    """
    update, insert = completion_statements(connection.vendor)
    at = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(update, [at, customer.pk, str(owner)])
        if not cursor.rowcount:
            return False
        cursor.execute(insert, [customer.pk, at, welcome_message_id(customer), str(owner)])
    return True


@functools.cache
def completion_statements(vendor: str) -> tuple[str, str]:
    """The UPDATE and the INSERT of `customer_onboarding_complete` on the `vendor` backend, with their placeholders.

    Built once from the models' tables and columns and the backend's own `Now()`: compiling
    an ORM UPDATE and INSERT costs more than running them. The UPDATE takes the time,
    the customer's id and the owner; the INSERT the customer's id, the time, the
    Message-ID and the owner.
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
    insert = f"INSERT INTO {quote(Onboarding._meta.db_table)} ({fields}) VALUES (%s, %s, %s, %s)"
    return update, insert


def error_describe(exc: BaseException) -> str:
    """One line about `exc` with every email address redacted by the framework's scrubber.

    SMTP errors quote the recipient; this text goes to logs, the admin and Sentry, which
    get the customer id instead.
    """
    text = f"{type(exc).__name__}: {exc}"
    return reporting.scrub(" ".join(text.split()))[:2000]


def is_permanent(exc: BaseException) -> bool:
    """True for an SMTP 5xx rejection, which no retry will cure."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return False


# A mail outage is retried with backoff up to this many seconds.
MAIL_OUTAGE_BACKOFF_CAP = 300.0
_POLICY_STATUS = re.compile(rb"^\s*5\.7\.\d{1,3}\b")


def is_policy_refusal(exc: BaseException) -> bool:
    """True for a 5xx reply with a 5.7.x enhanced status: refused by policy (relaying, auth, sandbox)."""
    replies: list[tuple[int, bytes | str]]
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
    elif isinstance(exc, smtplib.SMTPResponseException):
        replies = [(exc.smtp_code, exc.smtp_error)]
    else:
        return False
    return any(500 <= code < 600 and _POLICY_STATUS.match(message if isinstance(message, bytes) else
                                                           str(message).encode())
               for code, message in replies)


def mail_outage_delay(failures: int) -> float:
    """Seconds to wait before trying a mail server again after `failures` failed tries in a row.

    The customers' retry backoff, capped at MAIL_OUTAGE_BACKOFF_CAP: a server that is
    back is found within minutes, and one that isn't is not hammered.
    """
    cap = min(settings.ONBOARDING_RETRY_MAX_SECONDS, MAIL_OUTAGE_BACKOFF_CAP)
    return retry_delay(failures, cap=cap).total_seconds()


def is_mail_outage(exc: BaseException) -> bool:
    """True when sending failed for a reason no single customer causes.

    The server is unreachable, hung up, timed out, says it is unavailable (421), or
    refuses our login or sender address: every other customer would fail the same way,
    so no customer's attempt is counted.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return False
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError,
                        smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused, smtplib.SMTPNotSupportedError)):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, OSError)


def retry_delay(
    attempts: int, *, base: float | None = None, cap: float | None = None, rng: random.Random | None = None
) -> timedelta:
    """Exponential backoff with jitter, after the `attempts`-th failed attempt.

    The ceiling is base * 2^(attempts-1), capped at `cap`; the delay is drawn uniformly
    from the upper half of it, so retries of many customers spread out but the wait
    still grows with each attempt. `base` and `cap` default to the settings
    ONBOARDING_RETRY_BASE_SECONDS and ONBOARDING_RETRY_MAX_SECONDS.
    """
    base = settings.ONBOARDING_RETRY_BASE_SECONDS if base is None else base
    cap = settings.ONBOARDING_RETRY_MAX_SECONDS if cap is None else cap
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


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
        row = Customer.objects.select_for_update().filter(pk=customer.pk, claim_expires_at__gte=Now()).first()
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


@dataclass(frozen=True)
class RetryReport:
    """What `customers_retry_onboarding` did: how many were re-queued, and how many skipped and why."""

    requeued: int
    skipped: dict[str, int]  # reason -> how many


# Why a customer chosen for a retry was left alone, by its state.
RETRY_SKIP_REASONS = {
    OnboardingState.ONBOARDED: "already onboarded",
    OnboardingState.WAITING: "still in the queue, not failed",
    OnboardingState.RETRYING: "still in the queue, not failed",
}
BEING_ONBOARDED = "being onboarded right now"


@transaction.atomic
def customers_retry_onboarding(*, ids: Iterable[int]) -> RetryReport:
    """Put the failed customers, and those needing attention, among `ids` back in the queue with fresh counts.

    Only those are touched, and never one a daemon holds a live claim on: the
    UPDATE itself carries both conditions, so a customer claimed in the meantime is left
    alone and can't be emailed twice. The others are counted by reason. The onboarding
    daemon is woken once the transaction commits.
    """
    chosen = Customer.objects.filter(pk__in=list(ids))
    stopped = chosen.failed() | chosen.needing_attention()
    retryable = stopped.filter(Q(claimed_by="") | Q(claim_expires_at__lt=Now()))
    if connection.features.has_select_for_update:
        retryable = retryable.select_for_update()
    retry_ids = list(retryable.values_list("pk", flat=True))
    skipped = Counter(_retry_skip_reason(customer) for customer in chosen.exclude(pk__in=retry_ids))
    requeued = retryable.filter(pk__in=retry_ids).update(
        failed_at=None, attempts=0, next_attempt_at=None, claimed_by="", claim_expires_at=None,
        unknown_outcomes=0, attention_at=None, attention_reason=""
    )
    if requeued < len(retry_ids):  # claimed between the read and the UPDATE
        skipped[BEING_ONBOARDED] += len(retry_ids) - requeued
    if requeued:
        transaction.on_commit(onboarding_wake)
    return RetryReport(requeued=requeued, skipped=dict(skipped))


def _retry_skip_reason(customer: Customer) -> str:
    if customer.claimed_by and customer.onboarded_at is None:
        return BEING_ONBOARDED
    return RETRY_SKIP_REASONS[customer.onboarding_state]

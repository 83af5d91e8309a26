"""Sending one message over SMTP within a deadline, telling an unanswered end of DATA apart."""
from __future__ import annotations

import os
import re
import select
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.core.mail.backends import smtp
from django.core.mail.backends.base import BaseEmailBackend

from .failures import error_describe

if TYPE_CHECKING:
    from typing_extensions import Buffer


# An address as plain as smtplib and Django leave it unchanged: an ASCII dot-atom local part and domain.
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                           r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")


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
    poller: select.poll
    poller_sock: socket.socket | None = None

    def sendmail(self, *args, **kwargs):
        self.dot_sent = self.awaiting_final_reply = False
        self.reply_deadline = None
        return super().sendmail(*args, **kwargs)

    # smtplib quotes each envelope address by parsing it (email.utils.parseaddr, about 30 us a call); a plain
    # address, as every welcome email's are, needs only its angle brackets: the same command, sent sooner.
    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if options or not PLAIN_ADDRESS.fullmatch(sender):
            return super().mail(sender, options)
        self.putcmd("mail", f"from:<{sender}>")
        return self.getreply()

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if options or not PLAIN_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)
        self.putcmd("rcpt", f"to:<{recip}>")
        return self.getreply()

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
        # One poll object per socket, not a selector per message: this runs once for every email.
        if self.poller_sock is not sock:
            self.poller, self.poller_sock = select.poll(), sock
            self.poller.register(sock, select.POLLIN)
        while not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise smtplib.SMTPServerDisconnected(
                    f"no reply to the end of DATA within {settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS:g} s")
            if self.poller.poll(min(remaining, 1.0) * 1000):
                return
            if self.keepalive is not None:
                self.keepalive()


class FinalReplySMTP_SSL(FinalReplySMTP, smtplib.SMTP_SSL):
    """`FinalReplySMTP` over implicit TLS."""


@dataclass(frozen=True)
class Envelope:
    """A message as SMTP sends it: the envelope's sender and recipients, and the message's bytes."""

    sender: str
    recipients: list[str]
    data: bytes


@runtime_checkable
class Enveloped(Protocol):
    def envelope(self) -> Envelope | None:
        """The message ready for SMTP, or None to have Django's backend build it."""


class SmtpBackend(smtp.EmailBackend):
    """Django's SMTP backend with `FinalReplySMTP` sessions, sending an `Enveloped` message's own bytes."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return FinalReplySMTP_SSL if self.use_ssl else FinalReplySMTP

    def _send(self, email_message: EmailMessage) -> bool:
        envelope = email_message.envelope() if isinstance(email_message, Enveloped) else None
        if envelope is None:
            return super()._send(email_message)  # type: ignore[misc]  # Django's, not in its stubs
        assert self.connection is not None, "send_messages opens the connection first"
        try:
            self.connection.sendmail(envelope.sender, envelope.recipients, envelope.data)
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True


DJANGO_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def mail_connection() -> BaseEmailBackend:
    """A connection to the mail server, not yet open, whose every read waits at most ONBOARDING_SMTP_TIMEOUT_SECONDS.

    Django's SMTP backend is replaced by `SmtpBackend`, which tells an unanswered end of
    DATA apart and waits for its reply as long as RFC 5321 advises.
    """
    backend = f"{__name__}.SmtpBackend" if settings.EMAIL_BACKEND == DJANGO_SMTP_BACKEND else None
    return get_connection(backend, timeout=settings.ONBOARDING_SMTP_TIMEOUT_SECONDS)


def session_dropped(mail: BaseEmailBackend, exc: Exception) -> bool:
    """Whether `exc`, raised by a send through `mail`, says the server had dropped the session before it got any of
    the message: a hang-up, or the 421 a server sends as it closes an idle session, met before the end of DATA.
    """
    session = getattr(mail, "connection", None)
    if isinstance(session, FinalReplySMTP) and session.dot_sent:
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError))


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

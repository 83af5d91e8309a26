"""The welcome email: its Message-ID, its templates, and a message that is cheap to flatten."""
from __future__ import annotations

import functools
import re
import secrets
from email.message import Message
from email.policy import Compat32
from email.utils import formatdate, parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import RFC5322_EMAIL_LINE_LENGTH_LIMIT, sanitize_address
from django.template.loader import get_template

from ..models import Customer
from .mail import PLAIN_ADDRESS, Envelope


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
            message.set_boundary(self.boundary())
        return message

    def boundary(self) -> str:
        parts = [self.body, *(content for content, _ in self.alternatives)]
        boundary = f"==============={secrets.token_hex(12)}=="
        while any(boundary in str(part) for part in parts):
            boundary = f"==============={secrets.token_hex(12)}=="
        return boundary

    def envelope(self) -> Envelope | None:
        """The message as Django's SMTP backend would send it, written directly; None where Django must build it.

        Django builds a MIME tree, sanitizes the addresses twice and flattens the tree
        through the stdlib's generator: about 0.4 ms of a customer's CPU, several times
        what the bytes cost to write. For the common welcome email (ASCII headers that
        need no folding, a plain recipient address, text and HTML parts without
        over-long lines, UTF-8) the result is a fixed shape, written here in the same
        bytes (`tests/customers/test_welcome_email.py` compares them). Anything else is
        left to Django's path.
        """
        encoding = self.encoding or settings.DEFAULT_CHARSET
        html = [content for content, kind in self.alternatives if kind == "text/html" and isinstance(content, str)]
        [to] = self.to if len(self.to) == 1 else [""]
        subject, message_id, sender = str(self.subject), self.extra_headers.get("Message-ID", ""), self.from_email
        if (encoding.lower() != "utf-8" or not self.body or len(self.alternatives) != 1 or len(html) != 1
                or self.attachments or self.cc or self.bcc or self.reply_to or self.content_subtype != "plain"
                or list(self.extra_headers) != ["Message-ID"] or not PLAIN_ADDRESS.fullmatch(to)
                or not all(map(header_as_is, (subject, sender, to, message_id)))):
            return None
        parts = [part_bytes("plain", str(self.body)), part_bytes("html", html[0])]
        if None in parts:
            return None
        boundary = self.boundary()
        head = (f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'
                f"Subject: {subject}\r\nFrom: {sender}\r\nTo: {to}\r\n"
                f"Date: {formatdate(localtime=settings.EMAIL_USE_LOCALTIME)}\r\n"
                f"Message-ID: {message_id}\r\n\r\n--{boundary}\r\n")
        separator = f"\r\n--{boundary}\r\n".encode()
        data = head.encode() + separator.join(parts) + f"\r\n--{boundary}--\r\n".encode()  # type: ignore[arg-type]
        return Envelope(envelope_sender(sender, encoding), [to], data)


# Line ends as the stdlib's generator finds them, to write them as CRLF.
LINE_END = re.compile(r"\r\n|\r|\n")


def header_as_is(value: str) -> bool:
    """Whether `value` goes into a header unchanged: printable ASCII, which Django does not encode, short enough
    that neither Django (a subject past 76 characters) nor compat32 (a line past 78) folds it."""
    return value.isascii() and value.isprintable() and len(value) <= 60


@functools.cache
def envelope_sender(from_email: str, encoding: str) -> str:
    """The envelope's sender as Django's backend gives it to smtplib, or just its address where that is plain:
    smtplib sends only the address (MAIL FROM:<address>), and a plain one it need not parse again."""
    sanitized = sanitize_address(from_email, encoding)
    address = parseaddr(sanitized)[1]
    return address if PLAIN_ADDRESS.fullmatch(address) else sanitized


def part_bytes(subtype: str, text: str) -> bytes | None:
    """One text part, headers and body, as compat32 writes Django's UTF-8 `SafeMIMEText`; None past 998 bytes a line."""
    if any(len(line.encode(errors="surrogateescape")) > RFC5322_EMAIL_LINE_LENGTH_LIMIT for line in text.splitlines()):
        return None  # Django switches such a part to quoted-printable
    transfer = "7bit" if text.isascii() else "8bit"
    flat = "\r\n".join(LINE_END.split(text))
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
            f"Content-Transfer-Encoding: {transfer}\r\n\r\n{flat}").encode(errors="surrogateescape")


@functools.cache
def welcome_templates() -> tuple[Any, ...]:
    """The subject, text and HTML templates of the welcome email, compiled once per process."""
    return (get_template("emails/welcome_subject.txt"), get_template("emails/welcome.txt"),
            get_template("emails/welcome.html"))


def welcome_email(customer: Customer) -> WelcomeEmail:
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

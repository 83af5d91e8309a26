"""What a failed send means: the customer's fault, the mail server's, or for ever; and how to say it safely."""
from __future__ import annotations

import re
import smtplib

from daemons import reporting


class MailServerUnavailable(Exception):
    """The mail server can't be reached or refuses everyone; no customer is to blame."""


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

"""The daily digest: yesterday's signups and onboarding failures, emailed to staff (DigestDaemon sends it)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db.models import QuerySet
from django.template.loader import render_to_string

from .models import Customer

logger = logging.getLogger("customers.digest")  # the daemon passes its own


@dataclass(frozen=True)
class Digest:
    """What one day's digest reports; `day` is a calendar day in `tz`."""

    day: date
    tz: str
    signups: list[Customer]
    failures: list[Customer]


def digest_day(now: datetime, tz: str | None = None) -> tuple[date, datetime, datetime]:
    """The day before `now` on the wall clock of `tz` (default settings.TIME_ZONE), and its bounds.

    The bounds are local midnights, so a day with a daylight saving change is 23 or 25
    hours long, as the people reading the digest count it.
    """
    zone = ZoneInfo(tz or settings.TIME_ZONE)
    day = now.astimezone(zone).date() - timedelta(days=1)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return day, start, end


def customers_signed_up_between(start: datetime, end: datetime) -> QuerySet[Customer]:
    return Customer.objects.filter(created_at__gte=start, created_at__lt=end).order_by("created_at", "id")


def customers_failed_between(start: datetime, end: datetime) -> QuerySet[Customer]:
    return Customer.objects.failed().filter(failed_at__gte=start, failed_at__lt=end).order_by("failed_at", "id")


def digest_build(now: datetime, tz: str | None = None) -> Digest:
    """Collect the digest for the day before `now` (reads only)."""
    tz = tz or settings.TIME_ZONE
    day, start, end = digest_day(now, tz)
    return Digest(day=day, tz=tz, signups=list(customers_signed_up_between(start, end)),
                  failures=list(customers_failed_between(start, end)))


def digest_recipients() -> list[str]:
    """settings.DIGEST_RECIPIENTS if set, else the addresses of active staff users."""
    configured = list(getattr(settings, "DIGEST_RECIPIENTS", []) or [])
    if configured:
        return configured
    users = get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="").order_by("pk")
    return list(dict.fromkeys(users.values_list("email", flat=True)))


def digest_message_id(day: date) -> str:
    """One Message-ID per day, so a digest sent twice (a catch-up after a crash) threads as one."""
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(">") or "localhost"
    return f"<digest-{day.isoformat()}@{domain}>"


def digest_email(digest: Digest, recipients: list[str]) -> EmailMultiAlternatives:
    context = {"day": digest.day, "tz": digest.tz, "signups": digest.signups, "failures": digest.failures}
    message = EmailMultiAlternatives(
        subject=render_to_string("emails/digest_subject.txt", context).strip(),
        body=render_to_string("emails/digest.txt", context),
        to=recipients,
        headers={"Message-ID": digest_message_id(digest.day)},
    )
    message.attach_alternative(render_to_string("emails/digest.html", context), "text/html")
    return message


def digest_send(*, now: datetime, log: logging.Logger = logger) -> int:
    """Email the digest of the day before `now` to the recipients; return how many got it.

    With nobody to send to, logs a warning (action `digest_no_recipients`) and sends
    nothing. A mail error propagates, for the job's guard to log and count.
    """
    recipients = digest_recipients()
    if not recipients:
        log.warning("no digest recipients: set DIGEST_RECIPIENTS or give a staff user an email address",
                       extra={"action": "digest_no_recipients"})
        return 0
    digest = digest_build(now)
    digest_email(digest, recipients).send(fail_silently=False)
    log.info("sent the digest for %s (%d signups, %d failures) to %d recipients", digest.day,
                len(digest.signups), len(digest.failures), len(recipients),
                extra={"action": "digest_sent", "day": digest.day.isoformat(), "signups": len(digest.signups),
                       "failures": len(digest.failures)})
    return len(recipients)

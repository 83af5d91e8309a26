"""The daily digest daemon: yesterday's signups and failures, emailed at 08:00 local time."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model

from customers.daemons import DigestDaemon
from customers.digest import digest_build, digest_day, digest_recipients
from customers.models import Customer
from customers.signup import customer_create
from daemons import registry
from daemons.models import JobRun

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def berlin(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    settings.DIGEST_RECIPIENTS = []


def signup(name: str, at: datetime, *, failed_at: datetime | None = None, error: str = "") -> Customer:
    customer, _ = customer_create(name=name, email=f"{name.lower()}@example.com")
    Customer.objects.filter(pk=customer.pk).update(created_at=at, failed_at=failed_at, last_error=error,
                                                   attempts=5 if failed_at else 0)
    return Customer.objects.get(pk=customer.pk)


@pytest.fixture
def staff():
    users = get_user_model().objects
    users.create_user("boss", "boss@example.com", is_staff=True)
    users.create_user("ops", "ops@example.com", is_staff=True)
    users.create_user("gone", "gone@example.com", is_staff=True, is_active=False)
    users.create_user("nostaff", "user@example.com")
    users.create_user("noemail", "", is_staff=True)


def test_the_digest_day_is_yesterday_on_the_local_wall_clock() -> None:
    # 00:30 in Berlin on the 27th is still the 26th in UTC: yesterday is the 26th.
    day, start, end = digest_day(datetime(2026, 11, 26, 23, 30, tzinfo=UTC))
    assert day.isoformat() == "2026-11-26"
    assert start == datetime(2026, 11, 26, tzinfo=BERLIN) and end == datetime(2026, 11, 27, tzinfo=BERLIN)
    # The day the clocks went forward had 23 hours.
    day, start, end = digest_day(datetime(2026, 3, 30, 8, 0, tzinfo=BERLIN))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


def test_recipients_are_active_staff_with_an_address_unless_configured(staff, settings) -> None:
    assert digest_recipients() == ["boss@example.com", "ops@example.com"]
    settings.DIGEST_RECIPIENTS = ["team@example.com"]
    assert digest_recipients() == ["team@example.com"]


def test_the_digest_counts_only_yesterdays_signups_and_failures() -> None:
    signup("Early", datetime(2026, 11, 25, 23, 59, tzinfo=BERLIN))
    a = signup("Ann", datetime(2026, 11, 26, 0, 0, tzinfo=BERLIN))
    b = signup("Bob", datetime(2026, 11, 26, 23, 59, tzinfo=BERLIN),
               failed_at=datetime(2026, 11, 26, 23, 59, 30, tzinfo=BERLIN), error="SMTPRecipientsRefused: 550")
    signup("Late", datetime(2026, 11, 27, 0, 0, tzinfo=BERLIN))
    digest = digest_build(datetime(2026, 11, 27, 8, 0, tzinfo=BERLIN))
    assert [c.pk for c in digest.signups] == [a.pk, b.pk]
    assert [c.pk for c in digest.failures] == [b.pk]


def test_daemon_is_registered_with_a_daily_cron_job() -> None:
    assert registry.get("digest") is DigestDaemon
    assert str(DigestDaemon.jobs["daily_digest"].schedule()) == "cron '0 8 * * *' (Europe/Berlin)"


def test_at_eight_the_daemon_emails_the_digest_once(daemon_harness, staff, mailoutbox) -> None:
    signup("Ann", datetime(2026, 11, 26, 9, 15, tzinfo=BERLIN))
    signup("Bob", datetime(2026, 11, 26, 10, 0, tzinfo=BERLIN),
           failed_at=datetime(2026, 11, 26, 11, 0, tzinfo=BERLIN), error="SMTPRecipientsRefused: 550 no such user")
    harness = daemon_harness(DigestDaemon)
    start = datetime(2026, 11, 27, 7, 59, 50, tzinfo=BERLIN)
    harness.run_ticks([start + timedelta(seconds=10 * i) for i in range(4)])  # 07:59:50 .. 08:00:20
    [mail] = mailoutbox
    assert mail.to == ["boss@example.com", "ops@example.com"]
    assert mail.subject == "Signups on Thu 26 Nov 2026: 2 new, 1 onboarding failure"
    assert "- Ann <ann@example.com>, 09:15" in mail.body
    assert "- Bob <bob@example.com> after 5 attempts: SMTPRecipientsRefused: 550 no such user" in mail.body
    [(html, mimetype)] = mail.alternatives
    assert mimetype == "text/html" and "<li>Ann &lt;ann@example.com&gt;, 09:15</li>" in html
    assert mail.extra_headers["Message-ID"].startswith("<digest-2026-11-26@")
    sent = harness.logs.assert_action("digest_sent", day="2026-11-26")
    assert (sent.signups, sent.failures) == (2, 1)
    harness.logs.assert_action("job_done", job="daily_digest", processed=2)
    assert harness.status_text() == "daily_digest: 1 runs, 0 errors, last 2026-11-27 08:00, next 2026-11-28 08:00"


def test_a_digest_missed_while_down_goes_out_once_at_start(daemon_harness, staff, mailoutbox) -> None:
    JobRun.objects.create(daemon="digest", job="daily_digest", runs=1,
                          last_run_at=datetime(2026, 11, 25, 8, 0, tzinfo=BERLIN))
    harness = daemon_harness(DigestDaemon)
    start = datetime(2026, 11, 27, 9, 30, tzinfo=BERLIN)
    harness.run_ticks([start, start + timedelta(seconds=10), start + timedelta(seconds=20)])
    assert len(mailoutbox) == 1 and "26 Nov 2026" in mailoutbox[0].subject
    harness.logs.assert_action("job_catch_up", job="daily_digest")


def test_without_recipients_nothing_is_sent_and_a_warning_is_logged(daemon_harness, mailoutbox) -> None:
    harness = daemon_harness(DigestDaemon)
    harness.run_ticks([datetime(2026, 11, 27, 7, 59, 59, tzinfo=BERLIN), datetime(2026, 11, 27, 8, 0, tzinfo=BERLIN)])
    assert mailoutbox == []
    assert harness.logs.assert_action("digest_no_recipients").levelname == "WARNING"


def test_a_mail_failure_is_logged_and_counted_and_the_daemon_goes_on(daemon_harness, staff, settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    harness = daemon_harness(DigestDaemon)
    harness.run_ticks([datetime(2026, 11, 27, 7, 59, 59, tzinfo=BERLIN), datetime(2026, 11, 27, 8, 0, tzinfo=BERLIN)])
    error = harness.logs.assert_action("job_error", job="daily_digest")
    assert isinstance(error.exc_info[1], OSError)
    row = JobRun.objects.get(daemon="digest", job="daily_digest")
    assert (row.runs, row.errors, row.last_outcome) == (1, 1, "error")
    assert "failed" in harness.status_text()

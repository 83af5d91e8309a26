"""In-process tests of onboarding: claiming, leases, completion, failures, backoff, the daemon's tick."""
from __future__ import annotations

import random
import smtplib
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from customers import onboarding
from customers.daemons import OnboardingDaemon
from customers.models import Customer, Onboarding, OnboardingState
from customers.onboarding import Outcome, Owner, claims
from customers.signup import customer_create

A = Owner("host-a", 0, "key-a", "100-aa")
B = Owner("host-b", 0, "key-b", "200-bb")
C = Owner("host-c", 0, "key-c", "300-cc")
LEASE = timedelta(seconds=60)
# SQLite's clock has millisecond precision.
CLOCK_SLACK = timedelta(milliseconds=5)


def expire_leases(**filters: object) -> None:
    """Make the matching claims' leases end in the past, as the passing of a lease would."""
    Customer.objects.exclude(claimed_by="").filter(**filters).update(
        claim_expires_at=timezone.now() - timedelta(seconds=1)
    )


def make_customers(count: int, start, *, step=timedelta(seconds=1)) -> list[Customer]:
    """`count` customers created `step` apart from `start`, oldest first."""
    customers = []
    for i in range(count):
        customer, _ = customer_create(name=f"Customer {i}", email=f"c{i}@example.com")
        Customer.objects.filter(pk=customer.pk).update(created_at=start + i * step)
        customers.append(Customer.objects.get(pk=customer.pk))
    return customers


def ready_daemon() -> OnboardingDaemon:
    """An onboarding daemon set up as the framework sets one up before its first tick."""
    daemon = OnboardingDaemon()
    daemon.setup()
    return daemon


@pytest.fixture
def smtp_settings(settings, smtp_sink):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp_sink.port
    return smtp_sink


# --- claiming ------------------------------------------------------------------------------


def test_claim_takes_the_oldest_first(db, fixed_now) -> None:
    customers = make_customers(5, fixed_now - timedelta(hours=1))
    # Created last but dated first: order is by signup time, not by id.
    Customer.objects.filter(pk=customers[4].pk).update(created_at=fixed_now - timedelta(days=1))
    before = timezone.now()
    claimed = onboarding.customers_claim(owner=A, now=fixed_now, limit=3)
    after = timezone.now()
    assert [c.pk for c in claimed] == [customers[4].pk, customers[0].pk, customers[1].pk]
    # The lease runs from the database's clock, not from the `now` the caller passed.
    assert all(c.claimed_by == str(A) for c in claimed)
    assert all(c.claim_expires_at is not None
               and before + LEASE - CLOCK_SLACK <= c.claim_expires_at <= after + LEASE + CLOCK_SLACK for c in claimed)


def test_claimed_customers_are_not_claimed_again_by_another_owner(db, fixed_now) -> None:
    make_customers(4, fixed_now - timedelta(hours=1))
    first = onboarding.customers_claim(owner=A, now=fixed_now, limit=3)
    second = onboarding.customers_claim(owner=B, now=fixed_now, limit=3)
    assert len(first) == 3 and len(second) == 1
    assert not {c.pk for c in first} & {c.pk for c in second}
    assert onboarding.customers_claim(owner=C, now=fixed_now, limit=3) == []


def test_an_expired_lease_lets_another_owner_claim_and_finish(db, fixed_now) -> None:
    [customer] = make_customers(1, fixed_now - timedelta(hours=1))
    assert onboarding.customers_claim(owner=A, now=fixed_now, limit=10)
    assert onboarding.customers_claim(owner=B, now=fixed_now, limit=10) == []
    expire_leases()
    [taken] = onboarding.customers_claim(owner=B, now=fixed_now, limit=10)
    assert taken.claimed_by == str(B)
    # A comes back late: its completion must not count, B's does.
    assert not onboarding.customer_onboarding_complete(customer=customer, owner=A, now=fixed_now)
    assert onboarding.customer_onboarding_complete(customer=customer, owner=B, now=fixed_now)
    assert Onboarding.objects.get().onboarded_by == str(B)


def test_a_host_whose_clock_runs_ahead_cannot_take_a_live_claim(db) -> None:
    make_customers(2, timezone.now() - timedelta(hours=1))
    assert len(onboarding.customers_claim(owner=A, now=timezone.now(), limit=1)) == 1
    # B's clock is ten minutes fast: by its own clock A's lease ended long ago.
    skewed = timezone.now() + timedelta(minutes=10)
    [taken] = onboarding.customers_claim(owner=B, now=skewed, limit=10)
    assert Customer.objects.filter(claimed_by=str(A)).count() == 1 and taken.claimed_by == str(B)


def test_renewal_keeps_the_lease_and_touches_only_our_claims(db, fixed_now) -> None:
    make_customers(3, fixed_now - timedelta(hours=1))
    onboarding.customers_claim(owner=A, now=fixed_now, limit=2)
    onboarding.customers_claim(owner=B, now=fixed_now, limit=2)
    expire_leases(claimed_by=str(B))
    before = timezone.now()
    assert onboarding.claims_renew(owner=A) == 2
    assert onboarding.claims_renew(owner=B) == 0  # a lease that ended is not brought back
    # B's claim expired and C takes it; A's renewed ones stay A's.
    [taken] = onboarding.customers_claim(owner=C, now=fixed_now, limit=10)
    assert taken.claimed_by == str(C) and Customer.objects.filter(claimed_by=str(B)).count() == 0
    assert all(expires is not None and expires >= before + LEASE - CLOCK_SLACK
               for expires in Customer.objects.filter(claimed_by=str(A)).values_list("claim_expires_at", flat=True))


def test_a_restarted_instance_takes_back_its_dead_predecessors_claims_at_once(db, fixed_now, tmp_path) -> None:
    make_customers(3, fixed_now - timedelta(hours=1))
    run_dir, other_run_dir = tmp_path / "run", tmp_path / "other"
    run_dir.mkdir()
    other_run_dir.mkdir()
    dead = Owner.current(1, run_dir)
    other_instance = Owner.current(2, run_dir)
    onboarding.customers_claim(owner=dead, now=fixed_now, limit=2)
    onboarding.customers_claim(owner=other_instance, now=fixed_now, limit=1)
    successor = Owner.current(1, run_dir)  # same kernel, same run directory, same instance: same PID lock
    assert successor.prefix == dead.prefix and str(successor) != str(dead)
    assert onboarding.claims_release_predecessors(owner=successor) == 2
    assert list(Customer.objects.exclude(claimed_by="").values_list("claimed_by", flat=True)) == [str(other_instance)]
    assert len(onboarding.customers_claim(owner=successor, now=fixed_now, limit=10)) == 2


def test_another_checkout_on_the_same_host_never_takes_fresh_claims(db, fixed_now, tmp_path) -> None:
    # Two checkouts (or two containers with the host's network and hostname): the same
    # hostname, the same instance number, each with its own run directory and PID lock.
    make_customers(4, fixed_now - timedelta(hours=1))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = Owner.current(0, tmp_path / "one"), Owner.current(0, tmp_path / "two")
    assert first.host == second.host and first.prefix != second.prefix
    assert len(onboarding.customers_claim(owner=first, now=fixed_now, limit=2)) == 2
    assert onboarding.claims_release_predecessors(owner=second) == 0
    assert len(onboarding.customers_claim(owner=second, now=fixed_now, limit=10)) == 2
    assert Customer.objects.filter(claimed_by=str(first)).count() == 2


def test_release_gives_back_only_the_owners_claims(db, fixed_now) -> None:
    make_customers(2, fixed_now - timedelta(hours=1))
    onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    onboarding.customers_claim(owner=B, now=fixed_now, limit=1)
    assert onboarding.claims_release(owner=A) == 1
    assert len(onboarding.customers_claim(owner=C, now=fixed_now, limit=10)) == 1


def test_a_retry_is_not_claimed_before_it_is_due(db, fixed_now) -> None:
    [customer] = make_customers(1, fixed_now - timedelta(hours=1))
    Customer.objects.filter(pk=customer.pk).update(attempts=1, next_attempt_at=fixed_now + timedelta(seconds=30))
    assert onboarding.customers_claim(owner=A, now=fixed_now, limit=10) == []
    assert onboarding.customers_claim(owner=A, now=fixed_now + timedelta(seconds=30), limit=10)


# --- completion ----------------------------------------------------------------------------


def test_onboard_sends_with_a_stable_message_id_then_records_once(db, fixed_now) -> None:
    [customer] = make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    result = onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now)
    assert result.outcome is Outcome.ONBOARDED
    [message] = mail.outbox
    assert message.to == [customer.email]
    assert message.extra_headers["Message-ID"] == onboarding.welcome_message_id(customer)
    record = Onboarding.objects.get(customer=customer)
    assert record.message_id == onboarding.welcome_message_id(customer) and record.onboarded_by == str(A)
    customer.refresh_from_db()
    assert customer.onboarded_at == fixed_now and customer.claimed_by == "" and customer.claim_expires_at is None
    # A second completion, as after a lost reply, changes nothing.
    assert not onboarding.customer_onboarding_complete(customer=customer, owner=A, now=fixed_now + timedelta(1))
    assert Onboarding.objects.count() == 1


def test_the_database_refuses_a_second_onboarding_record(db, fixed_now) -> None:
    [customer] = make_customers(1, fixed_now)
    Onboarding.objects.create(customer=customer, onboarded_at=fixed_now, message_id="x", onboarded_by="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Onboarding.objects.create(customer=customer, onboarded_at=fixed_now, message_id="x", onboarded_by="b")


def test_message_id_depends_only_on_the_customer(db, fixed_now) -> None:
    first, second = make_customers(2, fixed_now)
    assert onboarding.welcome_message_id(first) == onboarding.welcome_message_id(Customer.objects.get(pk=first.pk))
    assert onboarding.welcome_message_id(first) != onboarding.welcome_message_id(second)


# --- failures ------------------------------------------------------------------------------


def test_a_temporary_rejection_schedules_a_retry_and_frees_the_claim(db, fixed_now, smtp_settings) -> None:
    [customer] = make_customers(1, fixed_now)
    smtp_settings.handler.reject["c0@example.com"] = ("451 4.3.0 try later, c0@example.com", None)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    result = onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now)
    assert result.outcome is Outcome.RETRY
    customer.refresh_from_db()
    assert customer.attempts == 1 and customer.failed_at is None and customer.claimed_by == ""
    assert fixed_now + timedelta(seconds=15) <= customer.next_attempt_at <= fixed_now + timedelta(seconds=30)
    assert "451" in customer.last_error and "@" not in customer.last_error and "@" not in result.error
    assert not Onboarding.objects.exists()


def test_a_permanent_rejection_fails_at_once(db, fixed_now, smtp_settings) -> None:
    [customer] = make_customers(1, fixed_now)
    smtp_settings.handler.reject["c0@example.com"] = ("550 5.1.1 no such user", None)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    assert onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now).outcome is Outcome.FAILED
    customer.refresh_from_db()
    assert customer.attempts == 1 and customer.failed_at == fixed_now and customer.next_attempt_at is None
    counts = Customer.objects.onboarding_counts()
    assert counts[OnboardingState.FAILED] == 1 and counts[OnboardingState.WAITING] == 0


def test_max_attempts_then_failed(db, fixed_now, settings, smtp_settings) -> None:
    settings.ONBOARDING_MAX_ATTEMPTS = 3
    [customer] = make_customers(1, fixed_now)
    smtp_settings.handler.reject["c0@example.com"] = ("451 busy", None)
    now = fixed_now
    outcomes = []
    for _ in range(3):
        [customer] = onboarding.customers_claim(owner=A, now=now, limit=1)
        outcomes.append(onboarding.customer_onboard(customer=customer, owner=A, now=now).outcome)
        now += timedelta(hours=2)
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED]
    customer.refresh_from_db()
    assert customer.attempts == 3 and customer.failed_at is not None
    assert onboarding.customers_claim(owner=A, now=now, limit=1) == []


def test_a_failure_after_losing_the_claim_records_nothing(db, fixed_now) -> None:
    [customer] = make_customers(1, fixed_now)
    onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    expire_leases()
    onboarding.customers_claim(owner=B, now=fixed_now, limit=1)
    error = smtplib.SMTPRecipientsRefused({customer.email: (550, b"no")})
    assert onboarding.customer_onboarding_failed(customer=customer, owner=A, error=error, now=fixed_now) is None
    customer.refresh_from_db()
    assert customer.attempts == 0 and customer.failed_at is None and customer.claimed_by == str(B)


def test_an_unreachable_mail_server_blames_no_customer(db, fixed_now, settings, smtp_sink) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_sink.port
    smtp_sink.stop()
    [customer] = make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    with pytest.raises(onboarding.MailServerUnavailable):
        onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now)
    customer.refresh_from_db()
    assert customer.attempts == 0 and customer.last_error == "" and customer.onboarded_at is None


def test_retry_onboarding_puts_a_failed_customer_back(db, fixed_now) -> None:
    [customer] = make_customers(1, fixed_now)
    Customer.objects.filter(pk=customer.pk).update(attempts=5, failed_at=fixed_now, last_error="x")
    assert onboarding.customers_retry_onboarding(ids=[customer.pk]) == onboarding.RetryReport(1, {})
    assert onboarding.customers_claim(owner=A, now=fixed_now, limit=1)


@pytest.mark.parametrize(
    ("error", "permanent", "outage"),
    [
        (smtplib.SMTPRecipientsRefused({"a@x.example": (550, b"no such user")}), True, False),
        (smtplib.SMTPRecipientsRefused({"a@x.example": (451, b"greylisted")}), False, False),
        (smtplib.SMTPDataError(554, b"rejected as spam"), True, False),
        (smtplib.SMTPDataError(452, b"mailbox full"), False, False),
        (smtplib.SMTPResponseException(421, b"shutting down"), False, True),
        (smtplib.SMTPServerDisconnected("gone"), False, True),
        (smtplib.SMTPSenderRefused(553, b"bad sender", "welcome@localhost"), True, True),
        (ConnectionRefusedError(111, "Connection refused"), False, True),
        (TimeoutError("timed out"), False, True),
        (ValueError("bad template"), False, False),
    ],
)
def test_is_permanent_and_is_mail_outage(error, permanent, outage) -> None:
    assert onboarding.is_permanent(error) is permanent
    assert onboarding.is_mail_outage(error) is outage


def test_error_describe_redacts_every_address() -> None:
    error = smtplib.SMTPRecipientsRefused({"Jane.Doe+x@Example.COM": (550, b"5.1.1 <Jane.Doe+x@Example.COM> unknown")})
    text = onboarding.error_describe(error)
    assert "SMTPRecipientsRefused" in text and "550" in text and "unknown" in text
    assert "@" not in text and "Jane" not in text


@pytest.mark.parametrize(("attempts", "low", "high"), [(1, 15, 30), (2, 30, 60), (4, 120, 240), (30, 1800, 3600)])
def test_retry_delay_grows_exponentially_with_jitter_and_a_cap(attempts, low, high) -> None:
    rng = random.Random(4)
    delays = [onboarding.retry_delay(attempts, base=30, cap=3600, rng=rng).total_seconds() for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high
    assert len(set(delays)) > 100, "jitter spreads retries out"


def test_retry_delay_reads_its_settings(settings) -> None:
    settings.ONBOARDING_RETRY_BASE_SECONDS = 2
    settings.ONBOARDING_RETRY_MAX_SECONDS = 5
    assert 1 <= onboarding.retry_delay(1).total_seconds() <= 2
    assert 2.5 <= onboarding.retry_delay(10).total_seconds() <= 5


# --- the daemon's tick, in process ------------------------------------------------------------


def test_a_tick_claims_batch_after_batch_until_nobody_waits(db, fixed_now, settings, monkeypatch) -> None:
    settings.ONBOARDING_BATCH_SIZE = 3
    make_customers(7, fixed_now - timedelta(hours=1))
    batches: list[int] = []
    claim = claims.customers_claim

    def recording_claim(**kwargs):
        claimed = claim(**kwargs)
        batches.append(len(claimed))
        return claimed

    # The daemon looks it up in the claims module, not in the package that re-exports it.
    monkeypatch.setattr(claims, "customers_claim", recording_claim)
    result = ready_daemon().tick(fixed_now)
    assert batches == [3, 3, 1, 0]
    assert result.processed == 7 and result.summary == "onboarded 7 customers"
    assert len(mail.outbox) == 7 and Onboarding.objects.count() == 7
    assert not Customer.objects.exclude(claimed_by="").exists()


def test_one_customers_failure_does_not_stop_the_batch(db, fixed_now, smtp_settings, caplog) -> None:
    make_customers(3, fixed_now - timedelta(hours=1))
    smtp_settings.handler.reject["c1@example.com"] = ("550 5.1.1 unknown user c1@example.com", None)
    result = ready_daemon().tick(fixed_now)
    assert result.summary == "onboarded 2 customers, 1 failed"
    assert sorted(to for r in smtp_settings.received() for to in r.to) == ["c0@example.com", "c2@example.com"]
    [record] = [r for r in caplog.records if getattr(r, "action", "") == "onboard_failed"]
    assert record.customer_id == Customer.objects.get(email="c1@example.com").pk
    assert "@" not in record.getMessage()
    assert OnboardingDaemon().status() == "0 waiting, 1 failed"


def test_a_stop_mid_batch_gives_the_rest_back_at_once(db, fixed_now, monkeypatch) -> None:
    make_customers(5, fixed_now - timedelta(hours=1))
    daemon = ready_daemon()
    sent = iter(range(100))
    # The loop checks once per batch, then per customer.
    monkeypatch.setattr(daemon, "stop_requested", lambda: next(sent) >= 3)
    daemon.tick(fixed_now)
    assert Onboarding.objects.count() == 2
    assert not Customer.objects.exclude(claimed_by="").exists()
    assert OnboardingDaemon().status() == "3 waiting, 0 failed"


# --- bounded sending ---------------------------------------------------------------------------


def test_one_send_has_a_total_deadline_not_only_a_read_timeout(db, fixed_now, settings, smtp_settings) -> None:
    # Every reply comes within the 1.2 s read timeout, but MAIL and RCPT together take 2 s.
    settings.ONBOARDING_SMTP_TIMEOUT_SECONDS = 1.2
    settings.ONBOARDING_SEND_DEADLINE_SECONDS = 1.5
    smtp_settings.handler.mail_delay = 1.0
    smtp_settings.handler.rcpt_delay = 1.0
    make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    began = time.monotonic()
    with pytest.raises(onboarding.MailServerUnavailable, match="longer than 1.5 s"):
        onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now)
    # Never before the deadline; after it, by no more than a loaded machine's delay. Without the deadline the
    # send would have succeeded at about 2 s, each reply within the read timeout.
    assert 1.5 <= time.monotonic() - began < 3.0
    customer.refresh_from_db()
    assert customer.attempts == 0 and customer.onboarded_at is None


def test_a_send_within_its_deadline_is_untouched(db, fixed_now, settings, smtp_settings) -> None:
    settings.ONBOARDING_SEND_DEADLINE_SECONDS = 1.5
    smtp_settings.handler.delay = 0.5
    make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    assert onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now).outcome is Outcome.ONBOARDED


# --- the circuit breaker -----------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "policy"), [("554 5.7.1 Relay access denied", True),
                                               ("550 5.1.1 no such user", False)])
def test_a_server_refusing_everyone_fails_nobody(db, fixed_now, smtp_settings, reply, policy) -> None:
    make_customers(10, fixed_now - timedelta(hours=1))
    smtp_settings.handler.reject_all = reply
    daemon = ready_daemon()
    result = daemon.tick(timezone.now())
    assert result.processed == 0 and "mail server unavailable" in result.summary
    # A policy reply trips at once; other refusals after three different customers. The sends already
    # going out over the other connections meanwhile are refused too, and count for nobody either.
    tripped_after = 1 if policy else 3
    refused = len(smtp_settings.handler.refused)
    assert tripped_after <= refused < tripped_after + settings.ONBOARDING_SEND_CONCURRENCY
    assert not Customer.objects.exclude(attempts=0).exists() and not Customer.objects.failed().exists()
    assert not Customer.objects.exclude(claimed_by="").exists()
    # The next tick leaves the server alone until its backoff is over.
    assert "waiting to try again" in daemon.tick(timezone.now()).summary
    assert len(smtp_settings.handler.refused) == refused


def test_one_bad_address_among_good_ones_still_fails_at_once(db, fixed_now, smtp_settings) -> None:
    make_customers(21, fixed_now - timedelta(hours=1))
    smtp_settings.handler.reject["c7@example.com"] = ("550 5.1.1 no such user", None)
    result = ready_daemon().tick(timezone.now())
    assert result.summary == "onboarded 20 customers, 1 failed"
    assert list(Customer.objects.failed().values_list("email", flat=True)) == ["c7@example.com"]
    assert Customer.objects.get(email="c7@example.com").attempts == 1


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_refused_address_last_in_the_queue_is_tried_once_and_fails(db, fixed_now, settings, smtp_settings,
                                                                    concurrency) -> None:
    # The refusal is held back until the server proves itself, and nobody comes after it: the tick must
    # not claim it again (it is still ours and due), or it would send it again in a loop that never ends.
    settings.ONBOARDING_SEND_CONCURRENCY = concurrency
    make_customers(1, fixed_now - timedelta(hours=1))
    smtp_settings.handler.reject["c0@example.com"] = ("550 5.1.1 no such user", None)
    assert ready_daemon().tick(timezone.now()).summary == "onboarded 0 customers, 1 failed"
    assert len(smtp_settings.handler.refused) == 1
    assert list(Customer.objects.failed().values_list("email", flat=True)) == ["c0@example.com"]


def test_bad_addresses_next_to_each_other_cannot_stall_the_queue(db, fixed_now, settings, smtp_settings) -> None:
    # One connection: over several, a good address's 250 may land between the three refusals, and whether
    # the breaker trips first would be a race between the connections (either way nothing stalls).
    settings.ONBOARDING_SEND_CONCURRENCY = 1
    make_customers(8, fixed_now - timedelta(hours=1))
    for i in range(3):  # the three oldest: they come first in every tick
        smtp_settings.handler.reject[f"c{i}@example.com"] = ("550 5.1.1 no such user", None)
    daemon = ready_daemon()
    assert "mail server unavailable" in daemon.tick(timezone.now()).summary
    assert not Customer.objects.failed().exists()
    daemon.mail_retry_at = 0  # the backoff is over
    # The three are due again only later, so the others are tried first and get through.
    assert daemon.tick(timezone.now()).summary.startswith("onboarded ")
    assert Onboarding.objects.count() == 5 and not Customer.objects.filter(email__in=[
        f"c{i}@example.com" for i in range(3)], onboarded_at__isnull=False).exists()
    # Refused again after the server proved it works: their own failure, at once.
    result = daemon.tick(timezone.now() + timedelta(hours=1))
    assert result.summary == "onboarded 0 customers, 3 failed"
    assert sorted(Customer.objects.failed().values_list("email", flat=True)) == [f"c{i}@example.com" for i in range(3)]


@pytest.mark.parametrize(("error", "policy"), [
    (smtplib.SMTPRecipientsRefused({"a@x.example": (554, b"5.7.1 Relay access denied")}), True),
    (smtplib.SMTPRecipientsRefused({"a@x.example": (550, b"5.1.1 no such user")}), False),
    (smtplib.SMTPDataError(554, b"5.7.0 Message rejected: sandbox"), True),
    (smtplib.SMTPDataError(554, b"rejected as spam"), False),
])
def test_is_policy_refusal(error, policy) -> None:
    assert onboarding.is_policy_refusal(error) is policy


def test_bad_addresses_with_nobody_else_to_send_to_are_set_aside_not_held_for_ever(db, fixed_now, settings,
                                                                                     smtp_settings) -> None:
    settings.ONBOARDING_MAX_UNKNOWN_OUTCOMES = 3
    make_customers(3, fixed_now - timedelta(hours=1))
    for i in range(3):
        smtp_settings.handler.reject[f"c{i}@example.com"] = ("550 5.1.1 no such user", None)
    daemon = ready_daemon()
    later = timezone.now()
    for trip in range(3):  # no other customer ever proves the server works
        later += timedelta(hours=1)
        daemon.mail_retry_at = 0  # the backoff is over
        assert "mail server unavailable" in daemon.tick(later).summary, trip
    assert not Customer.objects.pending().exists()
    assert not Customer.objects.failed().exists() and not Customer.objects.exclude(attempts=0).exists()
    reasons = set(Customer.objects.filter(attention_at__isnull=False).values_list("attention_reason", flat=True))
    assert len(reasons) == 1 and Customer.objects.filter(attention_at__isnull=False).count() == 3
    assert next(iter(reasons)).startswith("refused every time it was tried") and "5.1.1" in next(iter(reasons))
    # Each says what its own last reply was, as every settled customer does.
    assert all("5.1.1" in error for error in Customer.objects.values_list("last_error", flat=True))
    daemon.mail_retry_at = 0
    assert daemon.tick(later + timedelta(hours=1)).idle  # set aside: not tried again until someone retries them

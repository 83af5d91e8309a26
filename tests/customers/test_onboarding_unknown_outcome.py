"""Sends whose end of DATA went out but was never answered: waited for, counted, bounded, never an endless stream.

A real SMTP sink records each message when its final dot arrives, then answers late, never,
or drops the connection; the tests scale the timeouts down, and one checks the defaults.
"""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings

from customers import onboarding
from customers.daemons import OnboardingDaemon
from customers.models import Customer, OnboardingState
from customers.onboarding import Outcome
from tests.conftest import wait_for
from tests.customers.conftest import onboarding_env
from tests.customers.test_onboarding import A, make_customers, smtp_settings  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


def copies(sink) -> list[str]:
    """The Message-ID of every message the sink stored."""
    return [message.message_id for message in sink.received()]


@pytest.fixture
def quick(settings, smtp_settings):  # noqa: F811 - the fixture imported above
    """Every read 0.5 s, every send 0.8 s up to its end of DATA."""
    settings.ONBOARDING_SMTP_TIMEOUT_SECONDS = 0.5
    settings.ONBOARDING_SEND_DEADLINE_SECONDS = 0.8
    return smtp_settings


def test_the_defaults_wait_ten_minutes_for_the_final_reply_and_use_the_session_that_does() -> None:
    # RFC 5321 4.5.3.2.6: 10 minutes. A server that answers after 45 s is well inside it.
    assert django_settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS == 600
    assert django_settings.ONBOARDING_MAX_UNKNOWN_OUTCOMES == 3
    # ...while every other read stays short: the final wait is not a read timeout.
    assert django_settings.ONBOARDING_SMTP_TIMEOUT_SECONDS < 45 < django_settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS


def test_a_slow_reply_to_the_end_of_data_is_waited_for_with_the_claim_kept(quick, settings, fixed_now) -> None:
    # The reply takes longer than a read timeout, the send deadline, and the whole lease.
    settings.ONBOARDING_LEASE_SECONDS = 1.2
    quick.handler.delay = 2.5
    make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    alive = []
    keeper = onboarding.ClaimKeeper(A, progress=lambda: alive.append(time.monotonic()))
    result = onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now, keepalive=keeper.keepalive)
    assert result.outcome is Outcome.ONBOARDED, result.error  # the lease was renewed while it waited
    assert len(alive) >= 2 and copies(quick) == [onboarding.welcome_message_id(customer)]


@pytest.mark.parametrize("server", ["never answers", "drops the connection"])
def test_no_reply_after_the_final_dot_is_an_unknown_outcome_counted_as_an_attempt(quick, settings, fixed_now,
                                                                                  server) -> None:
    settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS = 1.0
    if server == "never answers":
        quick.handler.delay = 30
    else:
        quick.handler.reset_after_data = True
    make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    result = onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now)
    assert result.outcome is Outcome.UNKNOWN
    customer.refresh_from_db()
    assert (customer.attempts, customer.unknown_outcomes, customer.claimed_by) == (1, 1, "")
    assert customer.next_attempt_at is not None and customer.onboarding_state == OnboardingState.RETRYING
    assert "SendOutcomeUnknown" in customer.last_error and len(copies(quick)) == 1


def test_a_timeout_before_the_end_of_data_is_a_mail_outage_as_before(quick, fixed_now) -> None:
    quick.handler.rcpt_delay = 1.0  # past the 0.5 s read timeout: nothing was sent
    make_customers(1, fixed_now)
    [customer] = onboarding.customers_claim(owner=A, now=fixed_now, limit=1)
    with pytest.raises(onboarding.MailServerUnavailable):
        onboarding.customer_onboard(customer=customer, owner=A, now=fixed_now)
    customer.refresh_from_db()
    assert (customer.attempts, customer.unknown_outcomes) == (0, 0) and copies(quick) == []


def test_unknown_outcomes_are_bounded_then_the_customer_needs_attention_with_the_reason(quick, settings,
                                                                                        fixed_now) -> None:
    settings.ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS = 0.5
    quick.handler.delay = 30
    make_customers(1, fixed_now)
    now, outcomes = fixed_now, []
    for _ in range(4):
        claimed = onboarding.customers_claim(owner=A, now=now, limit=1)
        if claimed:
            outcomes.append(onboarding.customer_onboard(customer=claimed[0], owner=A, now=now).outcome)
        now += timedelta(hours=2)
    assert outcomes == [Outcome.UNKNOWN, Outcome.UNKNOWN, Outcome.ATTENTION]
    customer = Customer.objects.get()
    assert customer.onboarding_state == OnboardingState.ATTENTION and customer.attention_at is not None
    assert "3 send(s) with an unknown outcome" in customer.attention_reason
    # Every copy carries the one Message-ID, so the server (and the reader) can tell them for one.
    assert copies(quick) == [onboarding.welcome_message_id(customer)] * 3
    assert "1 needs attention (customer" in OnboardingDaemon().status()


@pytest.mark.process
def test_a_daemon_pair_sends_one_copy_to_a_slow_server_and_at_most_three_to_a_silent_one(project, smtp_sink) -> None:
    # Scaled down by ten from the defaults' story: a 60 s lease (here 3 s), a server taking 45 s
    # (here 4.5 s) to confirm, and the 600 s final wait (here 8 s).
    onboarding_env(project, smtp_sink, lease_seconds=3, send_deadline_seconds=1, smtp_timeout_seconds=0.5,
                   final_reply_timeout_seconds=8, retry_base_seconds=0.2, retry_max_seconds=0.5)
    smtp_sink.handler.delay = 4.5
    slow = [Customer.objects.create(name=f"Slow {i}", email=f"slow{i}@example.com") for i in range(2)]
    project.start("onboarding", "--instance", "1")
    project.start("onboarding", "--instance", "2")
    wait_for(lambda: Customer.objects.onboarded().count() == 2, timeout=60, message="both onboarded")
    assert sorted(copies(smtp_sink)) == sorted(onboarding.welcome_message_id(c) for c in slow), "one copy each"

    # A server that stores the message and never answers: a few copies, then attention.
    project.env["ONBOARDING_FINAL_REPLY_TIMEOUT_SECONDS"] = "1"
    project.stop_all()
    smtp_sink.handler.delay = 3600
    silent = Customer.objects.create(name="Silent", email="silent@example.com")
    project.start("onboarding", "--instance", "1")
    project.start("onboarding", "--instance", "2")
    wait_for(lambda: Customer.objects.needing_attention().exists(), timeout=60, message="marked for attention")
    time.sleep(3)  # the daemons keep running: nothing more may go out to this customer
    sent = [mid for mid in copies(smtp_sink) if mid == onboarding.welcome_message_id(silent)]
    assert len(sent) == 3
    result = project.manage("daemonstatus", "onboarding", "--json")
    [row] = [row for row in json.loads(result.stdout) if row["instance"] == 1] or [None]
    assert row is not None and f"1 needs attention (customer {silent.pk}:" in row["status_text"], result.stdout

"""The onboarding states: one definition, read the same way by queries, instances and the status line."""
from __future__ import annotations

from datetime import timedelta

import pytest

from customers.daemons import OnboardingDaemon
from customers.models import Customer, OnboardingState
from customers.reports import onboarding_backlog

pytestmark = pytest.mark.django_db


def seed(fixed_now) -> dict[str, Customer]:
    """One customer in each state, plus a retrying one not yet due."""
    rows = {
        "waiting": {},
        "retrying_due": {"attempts": 1, "next_attempt_at": fixed_now - timedelta(seconds=1)},
        "retrying_later": {"attempts": 2, "next_attempt_at": fixed_now + timedelta(minutes=5)},
        "failed": {"attempts": 1, "failed_at": fixed_now},
        "attention": {"attempts": 3, "unknown_outcomes": 3, "attention_at": fixed_now, "attention_reason": "why"},
        "onboarded": {"attempts": 1, "onboarded_at": fixed_now},
        # Onboarded after an earlier failure was retried from the admin: onboarded wins.
        "onboarded_after_failure": {"onboarded_at": fixed_now, "failed_at": fixed_now},
    }
    return {key: Customer.objects.create(name=key, email=f"{key}@example.com", **fields)
            for key, fields in rows.items()}


def test_every_state_query_agrees_with_the_instance_property(fixed_now) -> None:
    customers = seed(fixed_now)
    for state in OnboardingState:
        in_query = set(Customer.objects.in_state(state).values_list("pk", flat=True))
        by_property = {c.pk for c in Customer.objects.all() if c.onboarding_state == state}
        assert in_query == by_property, state
    assert customers["onboarded_after_failure"].onboarding_state == OnboardingState.ONBOARDED
    # Each customer is in exactly one state.
    assert sum(Customer.objects.onboarding_counts().values()) == len(customers)


def test_counts_due_and_pending(fixed_now) -> None:
    customers = seed(fixed_now)
    assert Customer.objects.onboarding_counts() == {
        OnboardingState.ONBOARDED: 2, OnboardingState.FAILED: 1, OnboardingState.RETRYING: 2,
        OnboardingState.WAITING: 1, OnboardingState.ATTENTION: 1,
    }
    due = set(Customer.objects.due(fixed_now).values_list("name", flat=True))
    assert due == {"waiting", "retrying_due"}
    assert Customer.objects.pending().count() == 3
    assert customers["retrying_later"].pk in set(Customer.objects.due(fixed_now + timedelta(minutes=5))
                                                 .values_list("pk", flat=True))


def test_the_status_line_and_the_dashboard_count_the_same_states(fixed_now) -> None:
    seed(fixed_now)
    # Retrying customers are not counted as waiting anywhere.
    attention = Customer.objects.get(name="attention").pk
    assert OnboardingDaemon().status() == (f"1 waiting, 2 retrying, 1 failed, "
                                           f"1 needs attention (customer {attention}: why)")
    backlog = onboarding_backlog()
    assert (backlog.waiting, backlog.retrying, backlog.failed) == (1, 2, 1)

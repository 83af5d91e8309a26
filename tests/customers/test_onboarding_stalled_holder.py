"""A process stopped past the overdue age (SIGSTOP, a stalled VM) and then resumed: the claims the others took
from it meanwhile are not sent again, and the claims it takes on its return are not taken from it."""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from customers import onboarding
from customers.models import Customer
from customers.onboarding import ClaimKeeper, Owner
from daemons.models import Heartbeat
from tests.customers.test_onboarding import make_customers

# This test process plays the stalled one: its heartbeat row is the one `heartbeat.touch` stamps.
STALLED = Owner(socket.gethostname(), 0, "key-stalled", f"{os.getpid()}-aa")
OTHER = Owner("host-other", 0, "key-other", "900-bb")


def beat(owner: Owner, pid: int, age: timedelta) -> None:
    at = timezone.now() - age
    Heartbeat.objects.create(name=onboarding.DAEMON_NAME, instance=owner.instance, host=owner.host, pid=pid,
                             started_at=at, last_heartbeat=at)


def stall(owner: Owner) -> None:
    """As if `owner`'s process had been stopped for an hour: its heartbeat an hour old."""
    Heartbeat.objects.filter(host=owner.host).update(last_heartbeat=timezone.now() - timedelta(hours=1))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hosts(db) -> None:
    beat(STALLED, os.getpid(), timedelta(0))
    beat(OTHER, 900, timedelta(0))


def test_claims_taken_while_a_holder_was_stopped_are_not_sent_by_it_when_it_resumes(hosts, fixed_now) -> None:
    customers = make_customers(3, fixed_now - timedelta(hours=1))
    assert len(onboarding.customers_claim(owner=STALLED, now=fixed_now, limit=10)) == 3
    clock = Clock()
    keeper = ClaimKeeper(STALLED, clock=clock)
    assert keeper.holds(customers[0])
    stall(STALLED)
    taken = onboarding.customers_claim(owner=OTHER, now=fixed_now, limit=2)
    assert [c.pk for c in taken] == [customers[0].pk, customers[1].pk]
    clock.now += 3600  # the stopped process resumes, in the middle of its batch
    assert [keeper.holds(c) for c in customers] == [False, False, True]
    # It looked: its heartbeat is fresh again, and the claim it kept runs on.
    again = onboarding.customers_claim(owner=OTHER, now=fixed_now, limit=10)
    assert customers[2].pk not in {c.pk for c in again}
    assert Customer.objects.get(pk=customers[2].pk).claimed_by == str(STALLED)


def test_claims_a_holder_takes_on_its_return_are_not_taken_from_it(hosts, fixed_now) -> None:
    make_customers(2, fixed_now - timedelta(hours=1))
    stall(STALLED)
    assert len(onboarding.customers_claim(owner=STALLED, now=fixed_now, limit=10)) == 2
    assert onboarding.customers_claim(owner=OTHER, now=fixed_now, limit=10) == []


def test_a_holder_that_was_not_stopped_asks_the_database_nothing(hosts, fixed_now,
                                                                  django_assert_num_queries) -> None:
    customers = make_customers(2, fixed_now - timedelta(hours=1))
    onboarding.customers_claim(owner=STALLED, now=fixed_now, limit=10)
    clock = Clock()
    keeper = ClaimKeeper(STALLED, clock=clock)
    clock.now += keeper.confirm_after / 2
    with django_assert_num_queries(0):
        assert all(keeper.holds(c) for c in customers)

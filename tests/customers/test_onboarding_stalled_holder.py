"""A process stopped past the overdue age (SIGSTOP, a stalled VM) and then resumed: the claims the others took
from it meanwhile are not sent again, the claims it takes on its return are not taken from it, and the claims
it confirms while another process is claiming stay its own."""
from __future__ import annotations

import json
import os
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from customers import onboarding
from customers.models import Customer
from customers.onboarding import ClaimKeeper, Owner
from customers.onboarding.owner import process_marker, process_marker_sql
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


def test_the_sql_marker_names_the_process_the_python_one_does(hosts) -> None:
    [row] = Heartbeat.objects.filter(host=OTHER.host).annotate(marker=process_marker_sql()).values_list(
        "marker", "host", "instance", "pid")
    assert row[0] == process_marker(*row[1:]) and row[0] in str(OTHER)


# PostgreSQL judges a holder by the heartbeats of the claim statement's snapshot. Here the holder confirms its
# claim after that snapshot and before the claimer locks the row: the claimer's STRPOS (which it calls while it
# judges the holder) is shadowed by one that waits at an advisory lock the test holds meanwhile.
INTERLEAVED = """
import json, os, threading, time
from datetime import timedelta
import psycopg
from django.db import connection
from django.utils import timezone
from customers.models import Customer
from customers.onboarding import Owner, claims
from daemons.models import Heartbeat

HOLDER, CLAIMER, KEY = Owner("host-h", 0, "key-h", "500-hh"), Owner("host-s", 0, "key-s", "600-ss"), 4242
Customer.objects.create(name="Ada", email="ada@example.com")
[customer] = claims.customers_claim(owner=HOLDER, now=timezone.now(), limit=1)
stale = timezone.now() - timedelta(hours=1)  # the holder was stopped for an hour
Heartbeat.objects.create(name="onboarding", host=HOLDER.host, pid=HOLDER.pid, started_at=stale, last_heartbeat=stale)
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as gate:
    gate.execute("CREATE SCHEMA gate")
    gate.execute("CREATE FUNCTION gate.strpos(text, text) RETURNS integer LANGUAGE plpgsql AS "
                 f"$$ BEGIN PERFORM pg_advisory_lock_shared({KEY}); PERFORM pg_advisory_unlock_shared({KEY}); "
                 "RETURN pg_catalog.strpos($1, $2); END $$")
    gate.execute("SELECT pg_advisory_lock(%s)", (KEY,))
    taken = []

    def claim():
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO gate, public, pg_catalog")
        taken.extend(c.pk for c in claims.customers_claim(owner=CLAIMER, now=timezone.now(), limit=10))
        connection.close()

    claimer = threading.Thread(target=claim)
    claimer.start()
    deadline = time.monotonic() + 30
    while not gate.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]:
        assert time.monotonic() < deadline, "the claimer never reached the gate"
        time.sleep(0.01)
    confirmed = claims.claims_confirm(owner=HOLDER)  # the holder is back, before the claimer locks the row
    gate.execute("SELECT pg_advisory_unlock(%s)", (KEY,))
    claimer.join(30)
    assert not claimer.is_alive(), "the claim never ended"
print(json.dumps({"confirmed": sorted(confirmed), "taken": taken, "customer": customer.pk,
                  "holder": Customer.objects.get(pk=customer.pk).claimed_by}))
"""


def test_on_postgresql_a_holder_that_confirms_while_a_claim_runs_keeps_its_claim(pg_database, project) -> None:
    result = project.manage("shell", "--no-imports", "-c", INTERLEAVED, env={"DATABASE_URL": pg_database})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Both would send if the claimer took it: the holder confirmed it, so the holder alone has it.
    assert seen["confirmed"] == [seen["customer"]] and seen["taken"] == []
    assert seen["holder"] == str(Owner("host-h", 0, "key-h", "500-hh"))

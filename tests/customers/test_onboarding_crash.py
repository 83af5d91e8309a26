"""kill -9 tests: the onboarding promise holds across hard kills and slow mail servers."""
from __future__ import annotations

import collections
import os
import random
import signal
import time

import pytest
from django.conf import settings

from customers import onboarding as services
from customers.models import Customer, Onboarding
from daemons.process import pidfile
from tests.conftest import wait_for
from tests.customers.conftest import claims_past_lease, customers_seed, onboarding_env, sqlite_write_lock

pytestmark = pytest.mark.process

CUSTOMERS = 300
KILLS = 10
# Before a kill, a backlog smaller than this gets as many again: one restart and kill can drain a few
# dozen, and a fast machine would otherwise finish the work before the last kills.
TOP_UP_BELOW = 100
SENDERS = settings.ONBOARDING_SEND_CONCURRENCY  # one daemon process, sending this many emails at a time


def kill_9(project, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pidfile.is_locked(project.pid_file("onboarding")), message=f"pid {pid} to die")


def test_kill_9_at_random_moments_loses_nobody_and_records_nobody_twice(project, smtp_sink) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED", time.time_ns()))
    print(f"CRASH_TEST_SEED={seed}")  # shown on failure, to replay the same kill moments
    rng = random.Random(seed)
    smtp_sink.handler.delay = 0.01
    onboarding_env(project, smtp_sink, batch_size=25, lease_seconds=12, smtp_timeout_seconds=1)
    ids = customers_seed(CUSTOMERS)
    db_path = settings.DATABASES["default"]["NAME"]
    past_lease: list = []
    # Customers whose email the server had accepted when the daemon died uncommitted.
    in_flight: list[int] = []

    pid = project.start("onboarding")
    for kill in range(KILLS):
        if Customer.objects.filter(onboarded_at__isnull=True).count() < TOP_UP_BELOW:
            ids = customers_seed(TOP_UP_BELOW, prefix=f"k{kill}-")
        sent = smtp_sink.count()
        if kill % 3 == 0:
            # Between send and commit. The sink holds back its 250 for the next email, so
            # the daemon is mid-send; we take the write lock, let the 250 go, and kill the
            # daemon while its commit waits for the lock (the other emails going out then
            # can't be recorded either).
            handler = smtp_sink.handler
            handler.hold_next()
            wait_for(handler.held.is_set, timeout=10, message="an email held before its 250")
            accepted = handler.held_message
            assert accepted is not None
            with sqlite_write_lock(db_path):
                replied = handler.replied
                handler.release_held()
                wait_for(lambda handler=handler, replied=replied: handler.replied > replied,
                         message="the 250 to go out")
                kill_9(project, pid)
            [address] = accepted.to
            customer = Customer.objects.get(email=address)
            assert customer.onboarded_at is None, "the commit could not have happened under our lock"
            in_flight.append(customer.pk)
        elif kill % 3 == 1:
            # While an email is being delivered.
            target = sent + rng.randint(1, 20)
            wait_for(lambda target=target: smtp_sink.count() >= target, timeout=10, message=f"{target} emails")
            kill_9(project, pid)
        else:
            # At a moment chosen by the clock alone.
            time.sleep(rng.uniform(0.05, 0.4))
            kill_9(project, pid)
        waiting = Customer.objects.filter(onboarded_at__isnull=True).count()
        assert waiting, f"kill {kill + 1} came after the work was done"
        print(f"kill {kill + 1}: {waiting} waiting, {smtp_sink.count()} emails")
        past_lease += claims_past_lease()
        dead = set(Customer.objects.exclude(claimed_by="").values_list("claimed_by", flat=True))
        pid = project.start("onboarding")
        # The restart holds the PID lock, so it takes back the dead daemon's claims before
        # it reports ready: nobody waits for a lease to run out.
        assert not Customer.objects.filter(claimed_by__in=dead).exists()

    def all_onboarded() -> bool:
        past_lease.extend(claims_past_lease())
        return not Customer.objects.filter(onboarded_at__isnull=True).exists()

    wait_for(all_onboarded, timeout=30, message="every customer onboarded")

    assert Onboarding.objects.count() == len(ids)
    assert set(Onboarding.objects.values_list("customer_id", flat=True)) == set(ids)
    assert not Customer.objects.exclude(claimed_by="").exists()
    assert not Customer.objects.filter(attempts__gt=0).exists()
    assert past_lease == [], "a claim outlived its lease"

    received = smtp_sink.received()
    by_address = collections.defaultdict(list)
    for message in received:
        [address] = message.to
        by_address[address].append(message.message_id)
    customers = {c.email: c for c in Customer.objects.select_related("onboarding")}
    assert set(by_address) == set(customers), "every customer got an email"
    assert len(received) <= len(ids) + KILLS * SENDERS
    for address, message_ids in by_address.items():
        expected = services.welcome_message_id(customers[address])
        assert set(message_ids) == {expected} == {customers[address].onboarding.message_id}
    # Each kill between send and commit really did cause a repeat, with the same Message-ID. (A
    # later kill may land on that repeat too, and add one more: the total bound above holds it.)
    for pk in in_flight:
        assert len(by_address[Customer.objects.get(pk=pk).email]) >= 2
    assert "Traceback" not in project.log_file("onboarding").read_text()


def test_a_slow_mail_server_never_lets_a_claim_expire(project, smtp_sink) -> None:
    # One batch takes 24 x 0.2 s, longer than the 3.6 s lease: only renewal keeps it ours,
    # and a second instance polls every 0.2 s, ready to take any claim that expires.
    smtp_sink.handler.delay = 0.2
    onboarding_env(project, smtp_sink, batch_size=24, lease_seconds=3.6, smtp_timeout_seconds=0.3)
    project.start("onboarding", "--instance", "1")
    project.start("onboarding", "--instance", "2")
    customers_seed(24)
    past_lease: list = []

    def all_onboarded() -> bool:
        past_lease.extend(claims_past_lease(slack=0.2))
        return Onboarding.objects.count() == 24

    wait_for(all_onboarded, timeout=20, message="24 onboarded")
    assert past_lease == []
    addresses = [address for message in smtp_sink.received() for address in message.to]
    assert sorted(addresses) == sorted(set(addresses)) and len(addresses) == 24, "one email each"

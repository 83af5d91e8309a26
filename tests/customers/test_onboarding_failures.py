"""Real-process tests: a bad address, a flaky one and a mail server outage are each contained."""
from __future__ import annotations

import json
import os
import signal

import pytest

from customers.models import Customer, Onboarding
from tests.conftest import wait_for
from tests.customers.conftest import customers_seed, onboarding_env

pytestmark = pytest.mark.process


def daemon_row(project) -> dict:
    result = project.manage("daemonstatus", "onboarding", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = json.loads(result.stdout)
    return row


def test_poison_and_flaky_addresses_are_isolated_and_reported_without_the_address(
    project, smtp_sink, sentry_sink
) -> None:
    customers_seed(20)
    poison, flaky = "c5@example.com", "c12@example.com"
    smtp_sink.handler.reject[poison] = ("550 5.1.1 <c5@example.com>: no such user", None)
    smtp_sink.handler.reject[flaky] = ("451 4.2.0 <c12@example.com>: mailbox busy, try later", 2)
    onboarding_env(project, smtp_sink)
    project.env["SENTRY_DSN"] = sentry_sink.dsn
    pid = project.start("onboarding")

    def settled() -> bool:
        return Onboarding.objects.count() == 19 and Customer.objects.filter(failed_at__isnull=False).exists()

    wait_for(settled, timeout=20, message="19 onboarded and 1 failed")
    bad = Customer.objects.get(email=poison)
    assert bad.attempts == 1 and bad.failed_at is not None and bad.onboarded_at is None
    assert "550" in bad.last_error and "@" not in bad.last_error
    retried = Customer.objects.get(email=flaky)
    assert retried.attempts == 2 and retried.onboarded_at is not None and retried.failed_at is None
    assert [reply[:3] for address, reply in smtp_sink.handler.refused] == ["550", "451", "451"]
    assert not Customer.objects.filter(onboarded_at__isnull=True).exclude(email=poison).exists()

    # The daemon is still there, and counts the failure in its status line.
    wait_for(lambda: daemon_row(project)["info"] == "0 waiting, 1 failed", message="the status line")
    assert daemon_row(project)["pid"] == pid and daemon_row(project)["state"] == "running"

    # Sentry got one event per failed attempt, with the customer's id and no address.
    events = wait_for(lambda: len(sentry_sink.events()) >= 3 and sentry_sink.events(), message="3 Sentry events")
    ids = sorted(int(event["tags"]["customer_id"]) for event in events)
    assert ids == sorted([bad.pk, retried.pk, retried.pk])
    assert all(event["tags"]["daemon"] == "onboarding" for event in events)
    assert b"example.com" not in sentry_sink.raw()


def test_a_mail_server_outage_onboards_nobody_then_recovers_without_a_restart(project, smtp_sink) -> None:
    customers_seed(30)
    onboarding_env(project, smtp_sink)
    smtp_sink.stop()
    pid = project.start("onboarding")
    log = project.log_file("onboarding")
    wait_for(lambda: "mail server unavailable" in log.read_text(), message="the outage to be noticed")
    first = wait_for(lambda: daemon_row(project)["last_tick_at"], message="a heartbeat")
    wait_for(lambda: daemon_row(project)["last_tick_at"] != first, message="another tick during the outage")
    row = daemon_row(project)
    assert row["info"] == "30 waiting, 0 failed" and row["processed"] == 0
    assert not Onboarding.objects.exists()
    assert not Customer.objects.filter(onboarded_at__isnull=False).exists()
    # Nobody is blamed for the server being down: no attempt used, no failure recorded.
    assert not Customer.objects.filter(attempts__gt=0).exists()
    # Claims are held only while a tick tries to send, and given back at its end.
    wait_for(lambda: not Customer.objects.exclude(claimed_by="").exists(), message="claims given back")

    smtp_sink.start()
    wait_for(lambda: Onboarding.objects.count() == 30, timeout=15, message="all 30 onboarded after the outage")
    assert daemon_row(project)["pid"] == pid
    assert sorted(a for m in smtp_sink.received() for a in m.to) == sorted(f"c{i}@example.com" for i in range(30))
    assert "mail server available again" in log.read_text()


def test_a_stop_during_a_hung_send_is_abandoned_at_the_deadline_and_nobody_is_lost(project, smtp_sink) -> None:
    [customer_id] = customers_seed(1)
    onboarding_env(project, smtp_sink)
    smtp_sink.handler.hold_next()
    pid = project.start("onboarding", env={"DAEMONS_STOP_TIMEOUT": "1"})
    wait_for(lambda: smtp_sink.handler.held.is_set(), message="the send to hang")
    os.kill(pid, signal.SIGTERM)
    log = project.log_file("onboarding")
    wait_for(lambda: "abandoning" in log.read_text(), timeout=5, message="the abandoned send in the log")
    assert f"the welcome email to customer {customer_id}" in log.read_text()
    wait_for(lambda: project.manage("daemonstatus", "onboarding").returncode == 3, message="the daemon gone")
    smtp_sink.handler.release_held()
    # A restart takes back the dead daemon's claim at once and onboards the customer.
    project.start("onboarding")
    wait_for(lambda: Onboarding.objects.filter(customer_id=customer_id).exists(), message="onboarded after restart")


def test_a_relay_that_refuses_everyone_is_an_outage_not_forty_failures(project, smtp_sink, sentry_sink) -> None:
    customers_seed(40)
    smtp_sink.handler.reject_all = "554 5.7.1 Relay access denied"
    onboarding_env(project, smtp_sink)
    project.env["SENTRY_DSN"] = sentry_sink.dsn
    project.start("onboarding")
    log = project.log_file("onboarding")
    # Several ticks try the server again (with backoff) and each is refused at once.
    wait_for(lambda: len(smtp_sink.handler.refused) >= 3, timeout=20, message="three tries of the server")
    assert not Customer.objects.filter(failed_at__isnull=False).exists()
    assert not Customer.objects.filter(attempts__gt=0).exists() and not Onboarding.objects.exists()
    warnings = [line for line in log.read_text().splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) == 1 and "mail server unavailable" in warnings[0] and "5.7.1" in warnings[0], warnings
    events = wait_for(lambda: sentry_sink.events(), message="the Sentry event")
    assert len(events) == 1 and "MailServerUnavailable" in str(events[0])
    wait_for(lambda: not Customer.objects.exclude(claimed_by="").exists(), message="claims given back")
    assert daemon_row(project)["info"] == "40 waiting, 0 failed"

    # The relay gets its credentials: everyone is onboarded, nobody failed.
    smtp_sink.handler.reject_all = ""
    wait_for(lambda: Onboarding.objects.count() == 40, timeout=30, message="all 40 onboarded")
    assert not Customer.objects.filter(failed_at__isnull=False).exists()
    assert len(sentry_sink.events()) == 1

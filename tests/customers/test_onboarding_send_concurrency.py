"""ONBOARDING_SEND_CONCURRENCY: emails go out over that many connections at once, and a kill resends at most those."""
from __future__ import annotations

import asyncio
import collections
import email
import threading
from dataclasses import dataclass, field

import pytest

from customers import onboarding
from customers.daemons import MailLane
from customers.models import Customer, Onboarding
from tests.conftest import wait_for
from tests.customers.conftest import SinkHandler, SmtpSink, customers_seed, onboarding_env
from tests.customers.test_onboarding import ready_daemon
from tests.customers.test_onboarding_crash import kill_9


@dataclass
class GateHandler(SinkHandler):
    """The sink's handler, replying to no end of DATA until `gate` messages are waiting for their reply at once
    (or `release` is set), and counting sessions and the most messages ever waiting together.

    `arrivals` has every message whose end of DATA came in, with its Message-ID, even one whose client
    died before the reply (aiosmtpd then cancels the handler, and `received` never has it).
    """

    gate: int = 0
    waiting: int = 0
    peak: int = 0
    sessions: int = 0
    arrivals: list[tuple[str, str]] = field(default_factory=list)  # (recipient, Message-ID)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # aiosmtpd calls it by this name
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.arrivals.extend((address.lower(), message["Message-ID"]) for address in envelope.rcpt_tos)
            self.waiting += 1
            self.peak = max(self.peak, self.waiting)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20  # a client sending fewer at once fails the test, never hangs it
            while self.waiting < self.gate and not self.release.is_set() and loop.time() < deadline:
                await asyncio.sleep(0.005)
            return await super().handle_DATA(server, session, envelope)
        finally:
            with self.lock:
                self.waiting -= 1


@pytest.fixture
def gate_sink(settings):
    sink = SmtpSink(GateHandler())
    sink.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = sink.port
    try:
        yield sink
    finally:
        sink.close()


def test_a_tick_keeps_as_many_emails_going_out_as_the_concurrency(db, fixed_now, settings, gate_sink) -> None:
    settings.ONBOARDING_SEND_CONCURRENCY = 3
    handler: GateHandler = gate_sink.handler
    # Every reply waits until three messages wait for theirs: one connection at a time would never get one.
    handler.gate = 3
    ids = customers_seed(9)
    daemon = ready_daemon()
    result = daemon.tick(fixed_now)
    daemon.teardown()
    assert result.summary == "onboarded 9 customers"
    assert handler.peak == 3 and handler.sessions == 3
    # Each customer once, with its own Message-ID, recorded once.
    customers = {c.email: c for c in Customer.objects.filter(pk__in=ids)}
    sent = {message.to: message.message_id for message in gate_sink.received()}
    assert len(gate_sink.received()) == 9
    assert sent == {(email,): onboarding.welcome_message_id(c) for email, c in customers.items()}
    assert Onboarding.objects.filter(customer_id__in=ids).count() == 9


def test_with_a_concurrency_of_one_a_single_connection_sends_from_the_ticking_thread(
    db, fixed_now, settings, gate_sink
) -> None:
    settings.ONBOARDING_SEND_CONCURRENCY = 1
    handler: GateHandler = gate_sink.handler
    customers_seed(4)
    daemon = ready_daemon()
    assert daemon.tick(fixed_now).summary == "onboarded 4 customers"
    assert [lane.thread for lane in daemon.lanes] == [None]
    daemon.teardown()
    assert handler.peak == 1 and handler.sessions == 1


@pytest.mark.process
def test_a_kill_9_resends_at_most_the_emails_in_flight(project, settings) -> None:
    handler = GateHandler()
    sink = SmtpSink(handler)
    sink.start()
    try:
        handler.gate = 10**6  # no reply to any end of DATA until released: every send stays in flight
        onboarding_env(project, sink, send_concurrency=3, batch_size=10)
        ids = customers_seed(12)
        pid = project.start("onboarding")
        wait_for(lambda: handler.waiting == 3, timeout=20, message="three emails in flight")
        kill_9(project, pid)
        # All three connections were busy, none had its reply: a fourth email never started.
        assert len(handler.arrivals) == 3 and handler.peak == 3
        in_flight = {address for address, _ in handler.arrivals}
        handler.release.set()
        project.start("onboarding")
        wait_for(lambda: Onboarding.objects.filter(customer_id__in=ids).count() == 12, timeout=30,
                 message="every customer onboarded")
    finally:
        sink.close()
    by_address = collections.defaultdict(list)
    for address, message_id in handler.arrivals:
        by_address[address].append(message_id)
    customers = {c.email: c for c in Customer.objects.filter(pk__in=ids)}
    assert set(by_address) == set(customers)
    # Exactly the three in flight went out twice, each time with the same Message-ID; nobody else did.
    assert {address for address, sent in by_address.items() if len(sent) > 1} == in_flight
    assert len(handler.arrivals) == 12 + 3
    for address, message_ids in by_address.items():
        assert set(message_ids) == {onboarding.welcome_message_id(customers[address])}


def test_a_batch_of_one_is_sent_from_the_ticking_thread(db, fixed_now, settings, gate_sink, monkeypatch) -> None:
    settings.ONBOARDING_SEND_CONCURRENCY = 3
    senders = []
    send = MailLane.send

    def watched(lane, customer, keepalive):
        senders.append(threading.current_thread())
        return send(lane, customer, keepalive)

    monkeypatch.setattr(MailLane, "send", watched)
    daemon = ready_daemon()
    customers_seed(1, prefix="alone")
    assert daemon.tick(fixed_now).summary == "onboarded 1 customer"
    customers_seed(2, prefix="pair")
    assert daemon.tick(fixed_now).summary == "onboarded 2 customers"
    daemon.teardown()
    assert senders[0] is threading.current_thread()
    assert all(sender is not threading.current_thread() for sender in senders[1:]) and len(senders) == 3

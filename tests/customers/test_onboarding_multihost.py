"""Many onboarding daemons on several "hosts" sharing one PostgreSQL: a kill -9 and a partition lose nothing.

A host is a run directory of its own (no socket, no PID file shared), with its own instance
number so its heartbeat row is its own. Everything is real: PostgreSQL 15, an SMTP server,
`rundaemon` processes, SIGKILL, and a TCP path to the database that can be cut.
"""
from __future__ import annotations

import collections
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.conftest import wait_for
from tests.customers.conftest import onboarding_env

pytestmark = pytest.mark.process

# 3,000 customers for 3 instances finish in about 25 s here (2 shared cores, busy).
CUSTOMERS = 3000


def sql(url: str, statement: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def count(url: str, statement: str, *params: object) -> int:
    return sql(url, statement, *params)[0][0]


def seed(url: str, customers: int) -> None:
    sql(url, "INSERT INTO customers_customer (name, email, created_at, attempts, last_error, claimed_by)"
             " SELECT 'Customer ' || i, 'c' || i || '@example.com', now() + i * interval '1 microsecond', 0, '', ''"
             " FROM generate_series(1, %s) AS i", customers)


def start_host(project, tmp: Path, instance: int, url: str) -> subprocess.Popen:
    """`rundaemon onboarding --instance N` on a "host" of its own: its own run and log directories."""
    host = tmp / f"host{instance}"
    env = {"DAEMONS_RUN_DIR": str(host / "run"), "DAEMONS_LOG_DIR": str(host / "log"), "DATABASE_URL": url}
    return project.popen("rundaemon", "onboarding", "--instance", str(instance), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def onboarded_by_instance(url: str) -> collections.Counter:
    owners = sql(url, "SELECT onboarded_by FROM customers_onboarding")
    return collections.Counter(int(owner.split("/")[2]) for (owner,) in owners)


def assert_nothing_lost(url: str, sink, customers: int) -> int:
    """One Onboarding row per customer, every customer mailed, copies with one Message-ID; return the copies."""
    assert count(url, "SELECT count(*) FROM customers_onboarding") == customers
    assert count(url, "SELECT count(DISTINCT customer_id) FROM customers_onboarding") == customers
    assert count(url, "SELECT count(*) FROM customers_customer WHERE onboarded_at IS NULL") == 0
    ids = collections.defaultdict(set)
    for message in sink.received():
        for address in message.to:
            ids[address].add(message.message_id)
    addresses = {email for (email,) in sql(url, "SELECT email FROM customers_customer")}
    assert set(ids) == addresses, "every customer got at least one email"
    assert [a for a, found in ids.items() if len(found) != 1] == [], "copies of one welcome share its Message-ID"
    return sink.count() - customers


def test_three_instances_share_3000_customers_and_a_kill_9_loses_nothing(pg_database, project, smtp_sink,
                                                                         tmp_path) -> None:
    onboarding_env(project, smtp_sink, batch_size=20)
    seed(pg_database, CUSTOMERS)
    began = time.monotonic()
    procs = [start_host(project, tmp_path, instance, pg_database) for instance in (1, 2, 3)]
    try:
        wait_for(lambda: all(onboarded_by_instance(pg_database)[i] >= 50 for i in (1, 2, 3)), timeout=60,
                 message="every instance at work")
        victim = procs[1]
        victim.kill()  # SIGKILL: no teardown, no release of its claims
        victim.wait()
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_onboarding") == CUSTOMERS, timeout=90,
                 message=f"{CUSTOMERS} onboarded")
        elapsed = time.monotonic() - began
    finally:
        kill_all(procs)
    copies = assert_nothing_lost(pg_database, smtp_sink, CUSTOMERS)
    # Only what the victim was sending when it died can go out twice: one email per connection.
    assert copies <= settings.ONBOARDING_SEND_CONCURRENCY, f"{copies} emails sent twice"
    spread = onboarded_by_instance(pg_database)
    assert set(spread) == {1, 2, 3} and min(spread.values()) >= 50, f"the work was spread: {spread}"
    assert spread[1] + spread[3] > spread[2], "the living finished the killed instance's share"
    print(f"{CUSTOMERS} customers, 3 instances, one killed: {elapsed:.1f} s, spread {dict(spread)}")


class CuttableLink:
    """A TCP path from one "host" to PostgreSQL that can be cut: while cut, new connections are refused."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.target = (parts.hostname, parts.port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut = threading.Event()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, upstream: str, application_name: str) -> str:
        parts = urlsplit(upstream)
        netloc = parts.netloc.replace(f":{parts.port}", f":{self.port}")
        return parts._replace(netloc=netloc, query=f"application_name={application_name}").geturl()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()  # the database is unreachable from this host
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.server.close()
        for sock in self.sockets:
            with suppress(OSError):
                sock.close()


@pytest.fixture
def link(pg_database) -> Iterator[CuttableLink]:
    link = CuttableLink(pg_database)
    try:
        yield link
    finally:
        link.close()


def test_a_daemon_cut_off_mid_batch_records_nothing_after_and_the_others_take_over(pg_database, project, smtp_sink,
                                                                                    link, tmp_path) -> None:
    customers = 300
    # Short leases (sends are bounded by a third of one), and slow mail so that batches take a while.
    onboarding_env(project, smtp_sink, batch_size=20, lease_seconds=4, send_deadline_seconds=1,
                   smtp_timeout_seconds=1)
    smtp_sink.handler.delay = 0.02
    seed(pg_database, customers)
    victim = start_host(project, tmp_path, 1, link.url(pg_database, "cut-off-host"))
    procs = [victim]
    try:
        wait_for(lambda: onboarded_by_instance(pg_database)[1] >= 5, timeout=60, message="the victim at work")
        procs.append(start_host(project, tmp_path, 2, pg_database))
        link.cut.set()
        terminated = sql(pg_database, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                      "WHERE application_name = 'cut-off-host'")
        assert terminated and all(ok for (ok,) in terminated)
        # Only now is the victim cut off (the call waits for its backend to end): until then it could
        # still commit, legitimately.
        [(cut_at,)] = sql(pg_database, "SELECT now()")
        held = count(pg_database, "SELECT count(*) FROM customers_customer WHERE claimed_by LIKE %s",
                     f"%/1/{victim.pid}-%")
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_onboarding") == customers, timeout=90,
                 message="the others finishing every customer")
        # Heal the partition: the victim comes back (a fresh heartbeat) and finds nothing to do.
        link.cut.clear()
        [(healed_at,)] = sql(pg_database, "SELECT now()")
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM daemons_heartbeat WHERE instance = 1 "
                                            "AND last_heartbeat > %s", healed_at), timeout=60,
                 message="the victim back on the database")
        assert victim.poll() is None, "an outage is waited out, not a crash"
    finally:
        kill_all(procs)
    late = count(pg_database, "SELECT count(*) FROM customers_onboarding WHERE onboarded_by LIKE %s "
                              "AND onboarded_at > %s", f"%/1/{victim.pid}-%", cut_at)
    assert late == 0, "nothing recorded by the cut-off daemon after it was cut off"
    assert held > 0, "the victim held claims when it was cut off"
    assert onboarded_by_instance(pg_database)[2] > 0
    assert_nothing_lost(pg_database, smtp_sink, customers)


@pytest.mark.django_db
def test_a_claim_whose_lease_ended_is_not_recorded_even_if_nobody_took_it() -> None:
    from datetime import timedelta

    from django.utils import timezone

    from customers import onboarding
    from customers.models import Customer, Onboarding

    Customer.objects.create(name="Ada", email="ada@example.com")
    owner = onboarding.Owner.current(1)
    [customer] = onboarding.customers_claim(owner=owner, now=timezone.now(), limit=1)
    Customer.objects.filter(pk=customer.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    assert onboarding.claims_renew(owner=owner) == 0
    assert onboarding.customer_onboarding_complete(customer=customer, owner=owner, now=timezone.now()) is False
    assert onboarding.customer_onboarding_failed(customer=customer, owner=owner, error=OSError("x"),
                                                 now=timezone.now()) is None
    assert not Onboarding.objects.exists()

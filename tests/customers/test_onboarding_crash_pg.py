"""kill -9 between the mail server's acceptance and the commit, on PostgreSQL: onboarded once, mailed with one ID.

The SQLite crash test holds the whole database's write lock; here the test holds a row lock on the customer
being onboarded, as another transaction on a busy PostgreSQL would, so the daemon's commit waits on that row.
"""
from __future__ import annotations

import collections

import pytest

from tests.conftest import wait_for
from tests.customers.conftest import onboarding_env
from tests.customers.test_onboarding_crash import kill_9
from tests.customers.test_onboarding_multihost import count, seed, sql

pytestmark = pytest.mark.process

CUSTOMERS = 5


def test_a_kill_9_while_the_commit_waits_on_a_row_lock_onboards_once_and_repeats_the_message_id(
    pg_database, project, smtp_sink
) -> None:
    import psycopg

    # One email at a time: the one held is the one in flight (test_onboarding_send_concurrency kills several).
    onboarding_env(project, smtp_sink, batch_size=CUSTOMERS, lease_seconds=30, send_concurrency=1)
    project.env["DATABASE_URL"] = pg_database
    seed(pg_database, CUSTOMERS)
    handler = smtp_sink.handler
    handler.hold_next()
    pid = project.start("onboarding")
    wait_for(handler.held.is_set, timeout=30, message="an email held before its 250")
    [address] = smtp_sink.received()[-1].to
    with psycopg.connect(pg_database) as locker:
        # Our transaction holds the customer's row; the daemon's UPDATE ... onboarded_at must wait for it.
        locker.execute("SELECT id FROM customers_customer WHERE email = %s FOR UPDATE", (address,))
        replied = handler.replied
        handler.release_held()
        wait_for(lambda: handler.replied > replied, message="the 250 to go out")
        # This database only: the cluster is shared with the tests running beside this one.
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                            " AND wait_event_type = 'Lock'"),
                 timeout=30, message="the daemon's commit to wait on our row lock")
        kill_9(project, pid)
        locker.rollback()
    assert count(pg_database, "SELECT count(*) FROM customers_customer WHERE email = %s AND onboarded_at IS NULL",
                 address) == 1, "the commit could not have happened under our lock"
    assert count(pg_database, "SELECT count(*) FROM customers_onboarding") == 0

    project.start("onboarding")
    wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_customer WHERE onboarded_at IS NULL") == 0,
             timeout=60, message="every customer onboarded after the restart")

    assert count(pg_database, "SELECT count(*) FROM customers_onboarding") == CUSTOMERS
    assert count(pg_database, "SELECT count(DISTINCT customer_id) FROM customers_onboarding") == CUSTOMERS
    recorded = dict(sql(pg_database, "SELECT c.email, o.message_id FROM customers_onboarding o "
                                     "JOIN customers_customer c ON c.id = o.customer_id"))
    sent = collections.defaultdict(list)
    for message in smtp_sink.received():
        [to] = message.to
        sent[to].append(message.message_id)
    assert set(sent) == set(recorded), "every customer got an email"
    # The one accepted but uncommitted went out again, under the Message-ID that was recorded; nobody else twice.
    assert sent.pop(address) == [recorded[address]] * 2
    assert all(ids == [recorded[to]] for to, ids in sent.items()), sent
    assert "Traceback" not in project.log_file("onboarding").read_text()

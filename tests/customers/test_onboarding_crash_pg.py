"""kill -9 after the mail server's acceptance, while the record waits on a row lock, on PostgreSQL: onboarded once.

The test holds a row lock on the customer being onboarded, as another transaction on a busy PostgreSQL would,
so the daemon's record waits on that row. On PostgreSQL the record is one statement (the INSERT fed by the
UPDATE's RETURNING), atomic on its own: once sent, the server finishes it even if the daemon is killed, so the
email is not sent again. The SQLite crash test kills a daemon before its commit, and sees the email resent.
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


def test_a_kill_9_while_the_record_waits_on_a_row_lock_records_it_once_and_sends_nothing_twice(
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
        # Our transaction holds the customer's row; the daemon's record must wait for it.
        locker.execute("SELECT id FROM customers_customer WHERE email = %s FOR UPDATE", (address,))
        replied = handler.replied
        handler.release_held()
        wait_for(lambda: handler.replied > replied, message="the 250 to go out")
        # This database only: the cluster is shared with the tests running beside this one.
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                            " AND wait_event_type = 'Lock'"),
                 timeout=30, message="the daemon's record to wait on our row lock")
        kill_9(project, pid)
        locker.rollback()
    # The statement the daemon sent runs to its end without it.
    wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_onboarding") == 1, timeout=30,
             message="the record the dead daemon sent to be made")
    assert count(pg_database, "SELECT count(*) FROM customers_customer WHERE email = %s AND onboarded_at IS NULL",
                 address) == 0

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
    assert all(ids == [recorded[to]] for to, ids in sent.items()), sent  # nobody twice, the one held included
    assert "Traceback" not in project.log_file("onboarding").read_text()

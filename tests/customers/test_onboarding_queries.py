"""What an onboarding tick asks of the database: one read when idle, two statements per customer when busy."""
from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.models import Onboarding
from tests.customers.conftest import customers_seed
from tests.customers.test_onboarding import ready_daemon


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The SQL run, without the savepoints that the test's own transaction turns each atomic block into."""
    return [q["sql"] for q in captured.captured_queries if not q["sql"].lstrip().upper().startswith(
        ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))]


def test_an_idle_tick_is_one_read_of_the_customers(db, fixed_now) -> None:
    daemon = ready_daemon()
    with CaptureQueriesContext(connection) as captured:
        result = daemon.tick(fixed_now)
    assert result.idle
    [query] = statements(captured)
    assert query.startswith("SELECT") and '"customers_customer"' in query and "heartbeat" not in query


def test_a_busy_tick_costs_two_statements_per_customer(db, fixed_now, settings) -> None:
    settings.ONBOARDING_BATCH_SIZE = 10
    customers_seed(25)
    daemon = ready_daemon()
    with CaptureQueriesContext(connection) as captured:
        result = daemon.tick(fixed_now)
    assert result.processed == 25 and Onboarding.objects.count() == 25
    run = statements(captured)
    per_customer = [q for q in run if q.startswith(('UPDATE "customers_customer" SET "onboarded_at"',
                                                    'INSERT INTO "customers_onboarding"'))]
    assert len(per_customer) == 2 * 25
    # Per batch (3): is anyone due, the heartbeats, is anyone claimable, our own heartbeat stamped, the
    # candidates, the heartbeats again (once the rows are locked), the claim, the claimed rows with their
    # lease. Then: nobody due (1) and the release of what is left (1).
    assert len(run) - len(per_customer) == 3 * 8 + 2

"""What an onboarding tick asks of the database: one read when idle, two statements per customer when busy,
and few per claim: three on SQLite, one on PostgreSQL."""
from __future__ import annotations

import json

from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.models import Onboarding
from tests.customers.conftest import customers_seed
from tests.customers.test_onboarding import ready_daemon


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The SQL run, without the savepoints that the test's own transaction turns each atomic block into."""
    return [q["sql"] for q in captured.captured_queries if not q["sql"].lstrip().upper().startswith(
        ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))]


def test_an_idle_tick_is_one_read_of_the_customers_that_reads_no_heartbeat(db, fixed_now) -> None:
    daemon = ready_daemon()
    with CaptureQueriesContext(connection) as captured:
        result = daemon.tick(fixed_now)
    assert result.idle
    [query] = statements(captured)
    assert query.startswith("SELECT") and '"customers_customer"' in query
    # The holders' heartbeats are read per customer due and held by another, so not at all when nobody is due.
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {query}")
        plan = {node: (parent, detail) for node, parent, _, detail in cursor.fetchall()}
    [parent] = [parent for parent, detail in plan.values() if "daemons_heartbeat" in detail]
    assert plan[parent][1].startswith("CORRELATED"), plan
    assert plan[min(plan)][1].startswith("SEARCH customers_customer USING INDEX customer_pending_idx"), plan


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
    # Per batch (3): is anyone claimable, the claim (UPDATE ... RETURNING), our own heartbeat stamped.
    # Then: nobody claimable (1) and the release of what is left (1). It was 8 per batch, and 2.
    assert len(run) - len(per_customer) == 3 * 3 + 2


def test_a_signups_wake_up_costs_seven_statements(db, fixed_now) -> None:
    customers_seed(1)
    daemon = ready_daemon()
    with CaptureQueriesContext(connection) as captured:
        assert daemon.tick(fixed_now).processed == 1
    # Anyone claimable, the claim, the stamp; the record (2); nobody claimable; the release. It was 12.
    assert [q.split(" ", 2)[:2] for q in statements(captured)] == [
        ["SELECT", "1"], ["UPDATE", '"customers_customer"'], ["UPDATE", '"daemons_heartbeat"'],
        ["UPDATE", '"customers_customer"'], ["INSERT", "INTO"], ["SELECT", "1"], ["UPDATE", '"customers_customer"']]


# A tick of a daemon on PostgreSQL, run where the daemon would run: in a process of its own.
PG_TICKS = """
import json, os, socket
from datetime import timedelta
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from customers.daemons import OnboardingDaemon
from customers.models import Customer
from daemons.models import Heartbeat
daemon = OnboardingDaemon()
daemon.setup()
old = timezone.now() - timedelta(minutes=1)
Heartbeat.objects.create(name="onboarding", host=socket.gethostname(), pid=os.getpid(), started_at=old,
                         last_heartbeat=old)
daemon.tick(timezone.now())  # the first claim compiles the statements (Django compiles FOR UPDATE in a transaction)

def beat():
    with connection.cursor() as cursor:  # xmin: the transaction that wrote the row's current version
        cursor.execute("SELECT xmin::text, last_heartbeat > %s FROM daemons_heartbeat", [old])
        return cursor.fetchone()

runs = {}
for name, customers in (("idle", 0), ("wake_up", 1), ("batches", 25)):
    Customer.objects.bulk_create([Customer(name=f"{name} {i}", email=f"{name}{i}@example.com")
                                  for i in range(customers)])
    before = beat()
    with CaptureQueriesContext(connection) as captured:
        result = daemon.tick(timezone.now())
    runs[name] = {"processed": result.processed, "sql": [q["sql"] for q in captured.captured_queries],
                  "beat": [before, beat()]}
print(json.dumps(runs))
"""


def test_on_postgresql_a_claim_and_a_record_are_one_statement_each_and_a_wake_up_four(pg_database, project) -> None:
    env = {"DATABASE_URL": pg_database, "ONBOARDING_BATCH_SIZE": "10"}
    result = project.manage("shell", "--no-imports", "-c", PG_TICKS, env=env)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout.strip().splitlines()[-1])

    def claims(sql: list[str]) -> list[str]:
        return [q for q in sql if q.startswith('WITH "claimed" AS (UPDATE "customers_customer"')]

    # Idle: the claim finds nobody, in one statement that locks and writes nothing, not even our heartbeat.
    assert runs["idle"]["processed"] == 0 and runs["idle"]["sql"] == claims(runs["idle"]["sql"])
    assert len(runs["idle"]["sql"]) == 1
    assert runs["idle"]["beat"][0] == runs["idle"]["beat"][1] == [runs["idle"]["beat"][0][0], False]
    # A wake-up: the claim; the record (one statement, the INSERT fed by the UPDATE); the claim finding nobody;
    # the release. It was 18 round trips: 3 reads, the claim's transaction of 7, the record's 4, 1 read, 3 to release.
    wake_up = runs["wake_up"]["sql"]
    assert runs["wake_up"]["processed"] == 1 and len(claims(wake_up)) == 2
    assert [q.split(" ", 1)[0] for q in wake_up] == ["WITH", "WITH", "WITH", "UPDATE"]
    assert wake_up[1].startswith("WITH done AS (UPDATE") and "INSERT INTO" in wake_up[1]
    assert runs["wake_up"]["beat"][1][1], "the claim stamped our heartbeat"
    # Batches of 10: three claims and the empty one, a record (1) per customer, and the release. It was 134.
    batches = runs["batches"]["sql"]
    assert runs["batches"]["processed"] == 25 and len(claims(batches)) == 4
    assert len(batches) == 4 + 25 + 1

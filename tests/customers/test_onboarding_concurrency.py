"""Real-process tests: several daemons, and the site writing while the daemon works, on one database."""
from __future__ import annotations

import collections
import json
import socket

import pytest

from customers.models import Customer, Onboarding
from tests.conftest import wait_for
from tests.customers.conftest import customers_seed, onboarding_env

pytestmark = pytest.mark.process

CUSTOMERS = 1000


def assert_one_email_each(sink, addresses: set[str]) -> None:
    """No crash happened, so any second email means two daemons held one customer."""
    counts = collections.Counter(a for message in sink.received() for a in message.to)
    assert set(counts) == addresses
    assert [a for a, n in counts.items() if n > 1] == []


def assert_clean_logs(project, *instances: int) -> None:
    for instance in instances:
        text = project.log_file("onboarding", instance).read_text()
        assert "database is locked" not in text and "Traceback" not in text, text[-3000:]


def test_two_daemons_on_one_sqlite_file_onboard_each_customer_once(project, smtp_sink) -> None:
    onboarding_env(project, smtp_sink, batch_size=20)
    project.start("onboarding", "--instance", "1")
    project.start("onboarding", "--instance", "2")
    customers_seed(CUSTOMERS)

    wait_for(lambda: Onboarding.objects.count() == CUSTOMERS and smtp_sink.count() >= CUSTOMERS, timeout=60,
             message=f"{CUSTOMERS} onboarded")
    assert Onboarding.objects.values("customer").distinct().count() == CUSTOMERS
    assert not Customer.objects.filter(onboarded_at__isnull=True).exists()
    assert not Customer.objects.filter(attempts__gt=0).exists()
    owners = Onboarding.objects.values_list("onboarded_by", flat=True)
    by_instance = collections.Counter(owner.split("/")[2] for owner in owners)
    assert set(by_instance) == {"1", "2"}, f"both instances worked: {by_instance}"
    assert_one_email_each(smtp_sink, set(Customer.objects.values_list("email", flat=True)))
    assert_clean_logs(project, 1, 2)


def test_two_daemons_on_postgresql_onboard_each_customer_once(pg_database, project, smtp_sink) -> None:
    import psycopg

    onboarding_env(project, smtp_sink, batch_size=20)
    project.env["DATABASE_URL"] = pg_database
    project.start("onboarding", "--instance", "1")
    project.start("onboarding", "--instance", "2")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO customers_customer (name, email, created_at, attempts, last_error, claimed_by)"
            " SELECT 'Customer ' || i, 'c' || i || '@example.com', now() + i * interval '1 microsecond', 0, '', ''"
            " FROM generate_series(1, %s) AS i",
            (CUSTOMERS,),
        )

        def count(sql: str) -> int:
            row = conn.execute(sql).fetchone()
            assert row is not None, sql
            return row[0]

        wait_for(lambda: count("SELECT count(*) FROM customers_onboarding") == CUSTOMERS
                 and smtp_sink.count() >= CUSTOMERS, timeout=60, message=f"{CUSTOMERS} onboarded")
        assert count("SELECT count(DISTINCT customer_id) FROM customers_onboarding") == CUSTOMERS
        assert count("SELECT count(*) FROM customers_customer WHERE onboarded_at IS NULL OR attempts > 0") == 0
        owners = [row[0] for row in conn.execute("SELECT onboarded_by FROM customers_onboarding")]
        addresses = {row[0] for row in conn.execute("SELECT email FROM customers_customer")}
    by_instance = collections.Counter(owner.split("/")[2] for owner in owners)
    assert set(by_instance) == {"1", "2"}, f"both instances worked: {by_instance}"
    assert_one_email_each(smtp_sink, addresses)
    assert_clean_logs(project, 1, 2)


WRITER = """
import json, time
from customers.signup import customer_create
made, errors, i = 0, [], 0
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    # Bursts of signups at full speed, then a pause: contention without an endless backlog.
    for _ in range(5):
        try:
            customer_create(name="Writer {n}", email=f"w{n}-{{i}}@example.com")
            made += 1
        except Exception as exc:
            errors.append(repr(exc))
        i += 1
    time.sleep(0.25)
print(json.dumps({{"made": made, "errors": errors[:5], "error_count": len(errors)}}))
"""


def test_site_signups_and_the_daemon_share_sqlite_without_database_is_locked(project, smtp_sink) -> None:
    onboarding_env(project, smtp_sink)
    project.start("onboarding")
    writers = [project.popen("shell", "-c", WRITER.format(seconds=20, n=n)) for n in range(4)]
    reports = []
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert "database is locked" not in err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["error_count"] for r in reports] == [0, 0, 0, 0], reports
    made = sum(r["made"] for r in reports)
    assert made == Customer.objects.count() and all(r["made"] > 100 for r in reports)

    print(f"{made} signups; {Onboarding.objects.count()} onboarded when the writers stopped")
    wait_for(lambda: Onboarding.objects.count() == made, timeout=30, message=f"all {made} signups onboarded")
    assert not Customer.objects.filter(attempts__gt=0).exists()
    result = project.manage("daemonstatus", "onboarding", "--json")
    [row] = json.loads(result.stdout)
    assert row["errors"] == 0 and row["info"] == "0 waiting, 0 failed"
    assert_one_email_each(smtp_sink, set(Customer.objects.values_list("email", flat=True)))
    assert_clean_logs(project, 0)
    first = Onboarding.objects.first()
    assert first is not None and socket.gethostname() in first.onboarded_by

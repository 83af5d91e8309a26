"""The breaker on PostgreSQL: a server refusing everyone is an outage there too, not a tick that errors.

Its trip counts an unknown outcome per held customer with an UPDATE that SQLite would take whatever the type of
the increment; PostgreSQL adds only integers to an integer column.
"""
from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.customers.conftest import onboarding_env
from tests.customers.test_onboarding_multihost import count, seed

pytestmark = pytest.mark.process

CUSTOMERS = 12


@pytest.mark.parametrize("reply", ["554 5.7.1 Relay access denied", "550 5.1.1 no such user"])
def test_a_server_refusing_everyone_trips_the_breaker_without_a_tick_error(
    pg_database, project, smtp_sink, reply
) -> None:
    # Every trip counts an unknown outcome for a "no such user"; a slow machine fits more trips in before the
    # server is fixed, and customers past the limit would rightly wait for an operator: not this test's subject.
    onboarding_env(project, smtp_sink, batch_size=CUSTOMERS, max_unknown_outcomes=1000)
    project.env["DATABASE_URL"] = pg_database
    seed(pg_database, CUSTOMERS)
    smtp_sink.handler.reject_all = reply
    project.start("onboarding")
    wait_for(lambda: len(smtp_sink.handler.refused) >= 6, timeout=30, message="several tries of the server")
    wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_customer WHERE claimed_by <> ''") == 0,
             message="the claims given back")
    log = project.log_file("onboarding").read_text()
    assert "mail server unavailable" in log
    assert " ERROR " not in log, log[-3000:]
    assert count(pg_database, "SELECT count(*) FROM customers_customer WHERE failed_at IS NOT NULL") == 0

    smtp_sink.handler.reject_all = ""
    wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_onboarding") == CUSTOMERS, timeout=60,
             message="everyone onboarded once the server accepts again")

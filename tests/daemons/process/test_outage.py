"""A database outage: logged and reported once, retried with backoff, recovered without a restart."""
from __future__ import annotations

import sqlite3
import time

import pytest
from django.conf import settings

from daemons.process.runner import Outage
from tests.conftest import wait_for
from tests.sentry_sink import SentrySink
from tests.support.processes import alive

pytestmark = pytest.mark.process


def test_backoff_doubles_and_is_capped_at_60_seconds(fixed_now) -> None:
    outage = Outage(since=fixed_now)
    delays = []
    for _ in range(9):
        delays.append(outage.delay())
        outage.failures += 1
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3", reason="SQLite lock")
def test_locked_sqlite_file_is_an_outage_the_daemon_survives(project) -> None:
    log = project.log_file("writer")
    with SentrySink() as sink:
        pid = project.start("writer", env={"SQLITE_BUSY_TIMEOUT": "0.1", "SENTRY_DSN": sink.dsn})
        wait_for(lambda: "started" in log.read_text(), message="the daemon to start")
        locker = sqlite3.connect(settings.DATABASES["default"]["NAME"], isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            # The daemon wakes on a datagram, so the outage is seen at once.
            from daemons.cluster.wakeup import wake

            wake("writer", project.run_dir)
            wait_for(lambda: "database unavailable" in log.read_text(), message="the outage in the log")
            time.sleep(3.5)  # the scenario: an outage that lasts a few retries (1 s, 2 s)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(lambda: "database is back after" in log.read_text(), timeout=10, message="recovery")
        text = log.read_text()
        assert text.count("database unavailable") == 1
        assert "database is locked" in text
        assert alive(pid)
        wait_for(lambda: sink.events(), message="the outage at Sentry")
        assert [e["tags"].get("kind") for e in sink.events()] == ["db_outage"]
        failures = int(text.split("database is back after ")[1].split()[0])
        assert 2 <= failures <= 4
    assert project.manage("daemonstatus", "writer").returncode == 0


def test_postgresql_stopped_and_started_is_an_outage_the_daemon_survives(project, private_pg) -> None:
    from tests.pg import pg_ctl

    cluster, pg_database = private_pg
    log = project.log_file("onboarding")
    pid = project.start("onboarding", env={"DATABASE_URL": pg_database})
    wait_for(lambda: "started" in log.read_text(), message="the daemon to start")
    pg_ctl(cluster, "stop")
    try:
        from daemons.cluster.wakeup import wake

        wake("onboarding", project.run_dir)
        wait_for(lambda: "database unavailable" in log.read_text(), message="the outage in the log")
        time.sleep(2)  # the scenario: the server stays down across a couple of retries
    finally:
        pg_ctl(cluster, "start")
    wait_for(lambda: "database is back after" in log.read_text(), timeout=15, message="recovery")
    assert log.read_text().count("database unavailable") == 1
    assert alive(pid)
    assert project.manage("daemonstatus", "onboarding", env={"DATABASE_URL": pg_database}).returncode == 0

"""Hosts whose clocks disagree: onboarding stays exactly once, and no live host is called dead.

Each "host" is a real `rundaemon onboarding` process with a run directory of its own, its
clock shifted by libfaketime (only the wall clock: the monotonic clock, which the kernel
never jumps, stays true). PostgreSQL and the SMTP sink keep the true time. Heartbeats and
leases are judged by the database's clock, so the shifts must change nothing.
"""
from __future__ import annotations

import glob
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.customers.conftest import onboarding_env
from tests.customers.test_onboarding_multihost import assert_nothing_lost, count, kill_all, sql

pytestmark = pytest.mark.process

# A heartbeat every 2 s, so "dead" means 6 s without one: far less than any shift here.
INTERVAL = "2"


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.fail("libfaketime is missing: run scripts/test-env.d/faketime.sh (apt-get install faketime)")
    return found[0]


def host_env(tmp: Path, instance: int, url: str, **clock: str) -> dict[str, str]:
    """The environment of "host" `instance`: its own run and log directories, and its clock (FAKETIME_* in `clock`)."""
    host = tmp / f"host{instance}"
    return {
        "DAEMONS_RUN_DIR": str(host / "run"), "DAEMONS_LOG_DIR": str(host / "log"), "DATABASE_URL": url,
        "LD_PRELOAD": libfaketime(), "FAKETIME_DONT_FAKE_MONOTONIC": "1", **clock,
    }


def start(project, env: dict[str, str], instance: int) -> subprocess.Popen:
    return project.popen("rundaemon", "onboarding", "--instance", str(instance), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def host_clock(project, env: dict[str, str]) -> float:
    """How far the clock of the host with `env` is from the database's, in seconds."""
    code = ("from django.db import connection; from django.utils import timezone; cursor = connection.cursor();"
            "cursor.execute('SELECT statement_timestamp()');"
            "print((timezone.now() - cursor.fetchone()[0]).total_seconds())")
    result = project.manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def cluster_states(project, env: dict[str, str]) -> dict[int, str]:
    """Each onboarding instance's state in `daemonstatus --all-hosts`, as the host with `env` sees it."""
    result = project.manage("daemonstatus", "onboarding", "--all-hosts", "--json", env=env)
    assert result.returncode == 0, f"daemonstatus exit {result.returncode}: {result.stdout}{result.stderr}"
    return {row["instance"]: row["state"] for row in json.loads(result.stdout)}


def own_state(project, env: dict[str, str]) -> str:
    """The state `daemonstatus` gives the onboarding instance running on the host with `env` (PID lock + heartbeat)."""
    result = project.manage("daemonstatus", "onboarding", "--json", env=env)
    [state] = [row["state"] for row in json.loads(result.stdout) if row["pid"]]
    return state


def host_views(project, env: dict[str, str]) -> dict[str, object]:
    """What the host with `env` serves: /daemons/health/'s onboarding state, and daemons_up from /daemons/metrics/."""
    code = (
        "import json; from django.test import Client; c = Client(REMOTE_ADDR='127.0.0.1');"
        "health = c.get('/daemons/health/', headers={'host': '127.0.0.1'}).json()['daemons']['onboarding'];"
        "up = sorted(line for line in c.get('/daemons/metrics/', headers={'host': '127.0.0.1'}).content.decode()"
        ".splitlines() if line.startswith('daemons_up{') and 'onboarding' in line);"
        "print(json.dumps({'health': health, 'up': up}))"
    )
    result = project.manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_everyone_alive(project, envs: list[dict[str, str]], instances: list[int]) -> None:
    for env in envs:
        assert cluster_states(project, env) == dict.fromkeys(instances, "running"), env.get("FAKETIME")
        assert own_state(project, env) == "running"
        views = host_views(project, env)
        assert views["health"] == "running", views
        up = views["up"]
        assert isinstance(up, list) and len(up) == len(instances) and all(line.endswith(" 1.0") for line in up), up


def seed(url: str, customers: int, prefix: str = "c") -> None:
    sql(url, "INSERT INTO customers_customer (name, email, created_at, attempts, last_error, claimed_by)"
             " SELECT 'Customer ' || i, %s || i || '@example.com', now() + i * interval '1 microsecond', 0, '', ''"
             " FROM generate_series(1, %s) AS i", prefix, customers)


def both_beating(url: str, instances: list[int]) -> bool:
    return count(url, "SELECT count(*) FROM daemons_heartbeat WHERE instance = ANY(%s) AND stopped_at IS NULL",
                 instances) == len(instances)


def test_two_hosts_a_minute_behind_and_ahead_send_one_email_each_and_see_each_other_alive(
        pg_database, project, smtp_sink, tmp_path) -> None:
    customers = 12
    onboarding_env(project, smtp_sink, batch_size=2, interval_seconds=INTERVAL)
    smtp_sink.handler.delay = 1.5  # a slow mail server: claims are held while it answers
    behind = host_env(tmp_path, 1, pg_database, FAKETIME="-60")
    ahead = host_env(tmp_path, 2, pg_database, FAKETIME="+60")
    assert round(host_clock(project, behind)) == -60 and round(host_clock(project, ahead)) == 60
    procs = [start(project, behind, 1), start(project, ahead, 2)]
    try:
        wait_for(lambda: both_beating(pg_database, [1, 2]), timeout=60, message="both hosts up")
        assert_everyone_alive(project, [behind, ahead], [1, 2])
        seed(pg_database, customers)
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_customer WHERE claimed_by <> ''") > 0,
                 timeout=30, message="claims taken")
        assert_everyone_alive(project, [behind, ahead], [1, 2])  # while both send
        wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_onboarding") == customers, timeout=120,
                 message=f"{customers} onboarded")
    finally:
        kill_all(procs)
    assert assert_nothing_lost(pg_database, smtp_sink, customers) == 0, "one email per customer"
    by = {owner.split("/")[2] for (owner,) in sql(pg_database, "SELECT onboarded_by FROM customers_onboarding")}
    assert by == {"1", "2"}, "both hosts onboarded customers"


def test_a_host_whose_clock_jumps_ten_minutes_forward_then_back_changes_nothing(
        pg_database, project, smtp_sink, tmp_path) -> None:
    onboarding_env(project, smtp_sink, batch_size=2, interval_seconds=INTERVAL)
    smtp_sink.handler.delay = 1.0
    clock_file = tmp_path / "faketime"
    clock_file.write_text("+0\n")
    steady = host_env(tmp_path, 1, pg_database)
    jumping = host_env(tmp_path, 2, pg_database, FAKETIME_TIMESTAMP_FILE=str(clock_file), FAKETIME_NO_CACHE="1")
    procs = [start(project, steady, 1), start(project, jumping, 2)]
    total = 0
    try:
        wait_for(lambda: both_beating(pg_database, [1, 2]), timeout=60, message="both hosts up")
        for shift in ("+600", "-600"):
            seed_more = 8
            seed(pg_database, seed_more, prefix=f"jump{shift[0]}")
            total += seed_more
            wait_for(lambda: count(pg_database, "SELECT count(*) FROM customers_customer WHERE claimed_by <> ''") > 0,
                     timeout=30, message="claims taken")
            clock_file.write_text(f"{shift}\n")  # mid-batch, as an NTP step or an operator's `date -s` would
            assert round(host_clock(project, jumping)) == int(shift)
            assert_everyone_alive(project, [steady, jumping], [1, 2])
            wait_for(lambda total=total: count(pg_database, "SELECT count(*) FROM customers_onboarding") == total,
                     timeout=120, message=f"{total} onboarded")
    finally:
        kill_all(procs)
    assert count(pg_database, "SELECT count(DISTINCT customer_id) FROM customers_onboarding") == total
    received = [address for message in smtp_sink.received() for address in message.to]
    assert len(received) == total and len(set(received)) == total, "one email per customer"

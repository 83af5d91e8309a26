"""Wake-ups across hosts on PostgreSQL: a signup's NOTIFY reaches a daemon no Unix socket can reach."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemons.cluster import listen
from tests.conftest import BASE_DIR, process_env, wait_for
from tests.customers import conftest as customers_conftest
from tests.customers.conftest import onboarding_env

pytestmark = pytest.mark.process

INTERVAL = 60  # far longer than any deadline below: only a wake-up can explain a quick onboarding
SIGNUP = "from customers.signup import customer_create; customer_create(name='Ada', email={email!r})"


smtp_sink = customers_conftest.smtp_sink  # the SMTP sink fixture, shared with the onboarding tests


def query(url: str, sql: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def signup_from_another_host(tmp: Path, url: str, email: str) -> None:
    """A signup by the site on a "host" of its own: its own run directory, so no socket reaches the daemon."""
    env = {**process_env(tmp / "site"), "DATABASE_URL": url}
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", SIGNUP.format(email=email)], cwd=BASE_DIR,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def onboarding_delay(url: str, email: str) -> float:
    """Seconds from the customer's signup to its onboarding, by the database's own timestamps."""
    rows = query(url, "SELECT extract(epoch FROM onboarded_at - created_at) FROM customers_customer "
                      "WHERE email = %s AND onboarded_at IS NOT NULL", email)
    return float(rows[0][0]) if rows else -1.0


def listen_backends(url: str) -> list[int]:
    return [pid for (pid,) in query(url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND application_name = 'daemons listen onboarding'")]


def start_onboarding(project, url: str, ready) -> subprocess.Popen:
    """An onboarding daemon on "host A" (the project's run directory) with a 60 s interval, once `ready()`."""
    project.env["DATABASE_URL"] = url
    proc = project.popen("rundaemon", "onboarding", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: proc.poll() is not None or ready(), timeout=60, message="the daemon ready")
        assert proc.poll() is None, proc.stderr.read()
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture
def daemon_host(pg_database, project, smtp_sink):
    onboarding_env(project, smtp_sink, interval_seconds=INTERVAL)
    proc = start_onboarding(project, pg_database, lambda: listen_backends(pg_database))
    try:
        yield proc
    finally:
        stop(proc)


def test_a_signup_on_another_host_wakes_the_daemon_at_once_and_again_after_its_listen_connection_dies(
        daemon_host, pg_database, smtp_sink, tmp_path) -> None:
    signup_from_another_host(tmp_path, pg_database, "ada@example.com")
    wait_for(lambda: onboarding_delay(pg_database, "ada@example.com") >= 0, timeout=30, message="onboarded")
    assert onboarding_delay(pg_database, "ada@example.com") < 5, "woken, not found by polling"

    [backend] = listen_backends(pg_database)
    assert query(pg_database, "SELECT pg_terminate_backend(%s)", backend) == [(True,)]
    # A new LISTEN connection comes back on its own, after the first backoff step (1 s).
    wait_for(lambda: listen_backends(pg_database) and listen_backends(pg_database) != [backend], timeout=30,
             message="the daemon listening again")
    assert daemon_host.poll() is None

    signup_from_another_host(tmp_path, pg_database, "bob@example.com")
    wait_for(lambda: onboarding_delay(pg_database, "bob@example.com") >= 0, timeout=30, message="onboarded")
    assert onboarding_delay(pg_database, "bob@example.com") < 5, "woken after reconnecting, not found by polling"
    assert smtp_sink.count() == 2


def test_with_listen_off_there_is_no_listen_connection_and_the_socket_wakes_the_daemon(
        pg_database, project, smtp_sink, tmp_path) -> None:
    """DAEMONS_LISTEN = False (PgBouncer in transaction mode): on one host the socket still wakes at once."""
    (tmp_path / "listen_off_settings.py").write_text("from tests.settings import *\nDAEMONS_LISTEN = False\n")
    onboarding_env(project, smtp_sink, interval_seconds=INTERVAL)
    project.env.update({"DJANGO_SETTINGS_MODULE": "listen_off_settings",
                        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(BASE_DIR)])})
    proc = start_onboarding(project, pg_database, lambda: project.run_dir.joinpath("onboarding.sock").exists()
                            and query(pg_database, "SELECT 1 FROM daemons_heartbeat WHERE name = 'onboarding'"))
    try:
        result = project.manage("shell", "-c", SIGNUP.format(email="cy@example.com"))
        assert result.returncode == 0, result.stderr
        wait_for(lambda: onboarding_delay(pg_database, "cy@example.com") >= 0, timeout=30, message="onboarded")
        assert onboarding_delay(pg_database, "cy@example.com") < 5, "woken by the socket, not found by polling"
        assert listen_backends(pg_database) == []
    finally:
        stop(proc)


def test_channel_names_are_one_identifier_each_within_postgresqls_limit() -> None:
    assert listen.channel("onboarding") == "daemons_onboarding"
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    assert len(listen.channel(long_a).encode()) <= 63
    assert listen.channel(long_a) != listen.channel(long_b)
    assert listen.channel("Mixed-Case name") == "daemons_Mixed-Case name"


def test_every_notification_in_a_burst_makes_one_wake_up(pg_database) -> None:
    """Many NOTIFYs before the daemon looks: one wait returns woken once, so one claim pass follows."""
    from daemons.cluster.listen import Listener
    from daemons.process import signals

    listener = Listener(listen.channel("burst"), {"conninfo": pg_database})
    assert listener.connect()
    try:
        with signals.installed() as stop:
            stop.attach_listener(listener)
            query(pg_database, "SELECT pg_notify('daemons_burst', i::text) FROM generate_series(1, 50) AS i")
            assert stop.wait(10) is False
            assert stop.consume_wakeup() is True
            assert stop.wait(0.3) is False
            assert stop.consume_wakeup() is False
    finally:
        listener.close()


def test_a_listener_whose_backend_dies_backs_off_then_listens_again(pg_database) -> None:
    import select

    from daemons.cluster.listen import Listener
    from tests.conftest import FakeClock

    clock = FakeClock()
    listener = Listener(listen.channel("lost"), {"conninfo": pg_database, "application_name": "lost-listener"},
                        clock=clock)
    try:
        assert listener.connect() and listener.retry_in() is None
        [(pid,)] = query(pg_database, "SELECT pid FROM pg_stat_activity WHERE application_name = 'lost-listener'")
        query(pg_database, "SELECT pg_terminate_backend(%s)", pid)
        # As the daemon's wait does: the dying connection's socket turns readable (the server's
        # farewell, then its end), and reading it finds the loss.
        deadline = time.monotonic() + 10
        while (fd := listener.fileno()) is not None and time.monotonic() < deadline:
            select.select([fd], [], [], 1)
            assert listener.drain() is False
        assert listener.fileno() is None and listener.retry_in() == 1.0
        assert listener.reconnect_if_due() is False  # not before the backoff
        clock.advance(1.0)
        assert listener.reconnect_if_due() is True
        query(pg_database, "SELECT pg_notify('daemons_lost', '')")
        fd = listener.fileno()
        assert fd is not None
        select.select([fd], [], [], 10)
        assert listener.drain() is True
    finally:
        listener.close()

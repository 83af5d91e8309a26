"""The signup rate limit holds across server processes: real gunicorn workers on one database.

SQLite serialises every writer, so only PostgreSQL, where writers run at once, exercises the race itself:
the row lock on the counter, and two workers inserting the window's first row together (IntegrityError).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from customers.models import Customer
from tests.conftest import process_env
from tests.webserver import gunicorn

pytestmark = pytest.mark.process

SIGNUPS = 40
LIMIT = 10


def sign_up_at_once(env: dict[str, str], tmp_path: Path) -> tuple[list[int], str]:
    """SIGNUPS signups from one address, released together onto four gunicorn workers; their statuses and
    the server's log."""
    env = {
        **env,
        "SIGNUP_RATE_LIMIT": str(LIMIT),
        "SIGNUP_RATE_WINDOW": str(10**9),  # one window for the whole test, whenever it runs
        # Each worker has its own memory cache: the limit must not depend on the cache.
        "CACHE_URL": "locmemcache://",
    }
    with gunicorn(env, tmp_path / "gunicorn.log", workers=4, threads=4) as server:
        token = server.csrf_token()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        start = threading.Barrier(SIGNUPS)
        statuses: list[int] = []
        errors: list[BaseException] = []

        def sign_up(number: int) -> None:
            body = f"csrfmiddlewaretoken={token}&name=Person+{number}&email=p{number}%40example.com".encode()
            try:
                start.wait(timeout=30)
                statuses.append(server.request("POST", "/", body, headers, keep_cookies=False).status)
            except BaseException as exc:  # reported below; a thread can't fail the test itself
                errors.append(exc)

        threads = [threading.Thread(target=sign_up, args=(number,)) for number in range(SIGNUPS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        log = server.log.read_text()
    assert not errors, errors
    return statuses, log


def test_forty_simultaneous_signups_from_one_address_through_four_workers_let_ten_in(
    tmp_path: Path, transactional_db
) -> None:
    statuses, log = sign_up_at_once(process_env(tmp_path), tmp_path)
    assert sorted(statuses) == [302] * LIMIT + [429] * (SIGNUPS - LIMIT), statuses
    assert Customer.objects.count() == LIMIT
    assert "Traceback" not in log


def test_forty_simultaneous_signups_through_four_workers_on_postgresql_let_ten_in(
    tmp_path: Path, pg_database: str
) -> None:
    import psycopg

    statuses, log = sign_up_at_once({**process_env(tmp_path), "DATABASE_URL": pg_database}, tmp_path)
    assert sorted(statuses) == [302] * LIMIT + [429] * (SIGNUPS - LIMIT), statuses
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM customers_customer").fetchone() == (LIMIT,)
        # One counter row for the window, however many workers raced to insert it, holding every attempt.
        assert conn.execute("SELECT count(*), sum(count) FROM customers_signupratecounter").fetchone() == (
            1, SIGNUPS)
    assert "Traceback" not in log

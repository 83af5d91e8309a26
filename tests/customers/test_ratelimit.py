"""The signup rate limit holds across server processes: real gunicorn workers on one database."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from customers.models import Customer
from tests.conftest import process_env
from tests.webserver import gunicorn

pytestmark = pytest.mark.process


def test_forty_simultaneous_signups_from_one_address_through_four_workers_let_ten_in(
    tmp_path: Path, transactional_db
) -> None:
    env = {
        **process_env(tmp_path),
        "SIGNUP_RATE_LIMIT": "10",
        "SIGNUP_RATE_WINDOW": str(10**9),  # one window for the whole test, whenever it runs
        # Each worker has its own memory cache: the limit must not depend on the cache.
        "CACHE_URL": "locmemcache://",
    }
    with gunicorn(env, tmp_path / "gunicorn.log", workers=4, threads=4) as server:
        token = server.csrf_token()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        start = threading.Barrier(40)
        statuses: list[int] = []
        errors: list[BaseException] = []

        def sign_up(number: int) -> None:
            body = f"csrfmiddlewaretoken={token}&name=Person+{number}&email=p{number}%40example.com".encode()
            try:
                start.wait(timeout=30)
                statuses.append(server.request("POST", "/", body, headers, keep_cookies=False).status)
            except BaseException as exc:  # reported below; a thread can't fail the test itself
                errors.append(exc)

        threads = [threading.Thread(target=sign_up, args=(number,)) for number in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        log = server.log.read_text()
    assert not errors, errors
    assert sorted(statuses) == [302] * 10 + [429] * 30, statuses
    assert Customer.objects.count() == 10
    assert "Traceback" not in log

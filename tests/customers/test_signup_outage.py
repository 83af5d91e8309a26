"""A signup while PostgreSQL restarts: a 503 with Retry-After (not a 500), and the same form works once it is back."""
from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import matched
from tests.pg import pg_ctl
from tests.test_settings_production import HTTPS, manage, site_env
from tests.webserver import Server, gunicorn

pytestmark = pytest.mark.process

FORM = {**HTTPS, "Content-Type": "application/x-www-form-urlencoded", "Referer": "https://127.0.0.1/"}


def sign_up(site: Server, token: str, email: str) -> tuple[int, str, str]:
    """POST the signup form: (status, Retry-After, body)."""
    response = site.request("POST", "/", f"csrfmiddlewaretoken={token}&name=Ada&email={email}".encode(), FORM)
    return response.status, response.headers.get("retry-after", ""), response.text


def test_a_signup_during_a_database_restart_is_a_503_to_retry_and_nothing_is_half_made(
        private_pg, tmp_path: Path) -> None:
    cluster, url = private_pg
    env = {**site_env(tmp_path, EMAIL_URL="smtp://127.0.0.1:1"), "DATABASE_URL": url}
    assert manage(env, "collectstatic", "--no-input").returncode == 0
    with gunicorn(env, tmp_path / "gunicorn.log", workers=1, threads=2) as site:
        page = site.request("GET", "/", headers=HTTPS)
        token = matched(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text, group=1)
        assert sign_up(site, token, "one%40example.com")[0] == 302
        pg_ctl(cluster, "stop")
        try:
            status, retry_after, body = sign_up(site, token, "two%40example.com")
        finally:
            pg_ctl(cluster, "start")
        assert (status, retry_after) == (503, "5"), body[:2000]
        assert "Please try again in 5 seconds" in body and "Traceback" not in body
        # The visitor sends it again, as the page says; Django's connection is re-made for the next request.
        assert sign_up(site, token, "two%40example.com")[0] == 302
        log = site.log.read_text()
    assert "database unavailable" in log and "Traceback" not in log
    with psycopg.connect(url) as conn:
        emails = [row[0] for row in conn.execute("SELECT email FROM customers_customer ORDER BY id")]
    assert emails == ["one@example.com", "two@example.com"]

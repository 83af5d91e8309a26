"""PostgreSQL fixtures: the test cluster started by scripts/test-env.d/postgres.sh, and fresh databases on it."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def _port() -> int:
    """The port scripts/test-env.d/postgres.sh started the cluster on (it moves on if 54329 is taken)."""
    recorded = BASE_DIR / "var" / "pg" / "port"
    if recorded.exists():
        return int(recorded.read_text().strip())
    return int(os.environ.get("TEST_PG_PORT", "54329"))


PG_PORT = _port()
PG_ROLE = "daemonkit"


def pg_url(database: str) -> str:
    return f"postgres://{PG_ROLE}@127.0.0.1:{PG_PORT}/{database}"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of the test cluster's maintenance database (scripts/test-env.d/postgres.sh).

    Outside CI a missing cluster skips the test; in CI it fails it, since `make test`
    starts the cluster there.
    """
    import psycopg

    url = pg_url(PG_ROLE)
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL test cluster unreachable at {url}: {exc}")
        pytest.skip(f"no PostgreSQL test cluster at {url}; run scripts/test-env.d/postgres.sh")
    return url


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database, migrated, for this test alone; its DATABASE_URL."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_url(name)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        env.update({"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": url})
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=BASE_DIR, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        yield url
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_ctl(action: str) -> None:
    """Stop or start the test cluster (as its owner when we are root), waiting until done."""
    binary = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin") + "/pg_ctl"
    data = (BASE_DIR / "var" / "pg").resolve() / "data"
    command = [binary, "-D", str(data), "-w", "-t", "60", "-m", "fast", action]
    if action == "start":
        command = [*command[:-3], "-l", str(data.parent / "server.log"), "-o", f"-p {PG_PORT}", "start"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=90)

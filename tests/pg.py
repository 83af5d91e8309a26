"""PostgreSQL fixtures: this run's test cluster (scripts/test-env.d/postgres.sh), and fresh databases on it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.prerequisites import missing
from tests.support.env_runner import run_py

BASE_DIR = Path(__file__).resolve().parent.parent
POSTGRES_SH = BASE_DIR / "scripts" / "test-env.d" / "postgres.sh"


@dataclass(frozen=True)
class Cluster:
    """A running test cluster: the URL of its `daemonkit` database and the directory that holds it."""

    url: str
    directory: Path

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None, f"no port in {self.url}"
        return port

    def database_url(self, database: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + database


# How long postgres.sh may take to start and to stop a cluster (initdb included) on a loaded machine.
CLUSTER_UP_SECONDS = 300
CLUSTER_DOWN_SECONDS = 120
# The session's cluster, once pg_server has found or started it.
_cluster: Cluster | None = None


class ClusterUnavailable(Exception):
    """The cluster could not be started; the message says why, in one line."""


@contextmanager
def own_cluster() -> Iterator[Cluster]:
    """A cluster started by postgres.sh for the block alone, stopped and removed after it.

    Raises ClusterUnavailable when postgres.sh could not start one.
    """
    env_dir = Path(tempfile.mkdtemp(prefix="dktest-pg-"))
    env = {**os.environ, "TEST_ENV_DIR": str(env_dir)}
    try:
        result = subprocess.run(["bash", str(POSTGRES_SH), "up"], env=env, capture_output=True, text=True,
                                timeout=CLUSTER_UP_SECONDS, stdin=subprocess.DEVNULL)
        recorded = read_env(env_dir / "env")
        if result.returncode != 0 or "TEST_PG_URL" not in recorded:
            raise ClusterUnavailable((result.stderr.strip().splitlines() or ["postgres.sh up failed"])[-1])
        yield Cluster(recorded["TEST_PG_URL"], Path(recorded["TEST_PG_DIR"]))
    finally:
        subprocess.run(["bash", str(POSTGRES_SH), "down"], env=env, capture_output=True,
                       timeout=CLUSTER_DOWN_SECONDS, stdin=subprocess.DEVNULL)
        shutil.rmtree(env_dir, ignore_errors=True)


def read_env(env_file: Path) -> dict[str, str]:
    """What the test-env.d scripts recorded, read by run.py's own reader (its directory is no package)."""
    return run_py().read_env(env_file)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts a cluster of its own (private_pg; pg_server outside `make test`) gets the time
    postgres.sh may take on top of the suite's per-test timeout, unless it set a timeout of its own."""
    budget = float(config.getini("timeout") or 0) + CLUSTER_UP_SECONDS + CLUSTER_DOWN_SECONDS
    own = {"private_pg"} if os.environ.get("TEST_PG_URL") else {"private_pg", "pg_server"}
    for item in items:
        if own & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(budget))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the test cluster's `daemonkit` database.

    `make test` starts one cluster for the run and passes it in TEST_PG_URL and TEST_PG_DIR. A plain
    `pytest` starts one for its session on first use, and stops and removes it at the end.
    """
    import psycopg

    global _cluster
    with ExitStack() as stack:
        if os.environ.get("TEST_PG_URL"):
            cluster = Cluster(os.environ["TEST_PG_URL"], Path(os.environ.get("TEST_PG_DIR", "")))
        else:
            try:
                cluster = stack.enter_context(own_cluster())
            except ClusterUnavailable as exc:
                missing(f"no PostgreSQL test cluster: {exc}")
        try:
            psycopg.connect(cluster.url, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            missing(f"PostgreSQL test cluster unreachable at {cluster.url}: {exc}")
        _cluster = cluster
        try:
            yield cluster.url
        finally:
            _cluster = None


@contextmanager
def migrated_database(cluster: Cluster) -> Iterator[str]:
    """A fresh database on `cluster`, migrated, dropped after the block; its DATABASE_URL."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.database_url(name)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        env.update({"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": url})
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=BASE_DIR, env=env,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        yield url
    finally:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database, migrated, for this test alone; its DATABASE_URL."""
    assert _cluster is not None, "pg_database needs the pg_server fixture"
    with migrated_database(_cluster) as url:
        yield url


@pytest.fixture
def private_pg() -> Iterator[tuple[Cluster, str]]:
    """A cluster of this test's own, and a migrated database on it: for a test that stops the server,
    which must not take the shared cluster away from the tests running beside it (pytest-xdist)."""
    try:
        with own_cluster() as cluster, migrated_database(cluster) as url:
            yield cluster, url
    except ClusterUnavailable as exc:
        missing(f"no PostgreSQL test cluster: {exc}")


def pg_ctl(cluster: Cluster, action: str) -> None:
    """Stop or start `cluster` (as its owner when we are root), waiting until done."""
    binary = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin") + "/pg_ctl"
    data = cluster.directory / "data"
    command = [binary, "-D", str(data), "-w", "-t", "60", "-m", "fast", action]
    if action == "start":
        command = [*command[:-3], "-l", str(cluster.directory / "server.log"), "-o", f"-p {cluster.port}", "start"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=90, stdin=subprocess.DEVNULL)

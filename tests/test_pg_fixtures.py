"""The PostgreSQL fixtures (tests/pg.py) on the run's real cluster."""
from __future__ import annotations

import uuid

import psycopg
import pytest

from tests import pg


def test_a_test_database_is_dropped_while_a_backend_of_another_role_is_in_it(pg_server: str) -> None:
    """After a busy test, an autovacuum worker (a backend of no role of ours) may still be in the database
    when it is dropped WITH (FORCE); the drop must end it, not fail the test's teardown."""
    assert pg._cluster is not None
    superuser = pg._cluster.url.replace("//daemonkit@", "//postgres@")
    visitor = f"visitor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{visitor}" LOGIN')
        try:
            with pg.migrated_database(pg._cluster) as url:
                name = url.rsplit("/", 1)[1]
                stranger = psycopg.connect(url.replace("//daemonkit@", f"//{visitor}@"), autocommit=True)
            with pytest.raises(psycopg.OperationalError):
                stranger.execute("SELECT 1")
            stranger.close()
            assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)
        finally:
            admin.execute(f'DROP ROLE IF EXISTS "{visitor}"')

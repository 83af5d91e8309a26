"""SqliteHuey whose own SQLite statements are counted like Django's (they don't go through Django)."""
from __future__ import annotations

import sqlite3

from huey import SqliteHuey
from huey.storage import SqliteStorage

from .counter import bump


class CountingSqliteStorage(SqliteStorage):
    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.set_trace_callback(lambda statement: bump())
        return conn


class CountingSqliteHuey(SqliteHuey):
    storage_class = CountingSqliteStorage

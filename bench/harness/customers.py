"""A benchmark's SQLite file, read and written with the stdlib alone: the harness needs no Django for these."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def seed(db_path: Path, count: int) -> None:
    """Empty the customer tables of `db_path`, then add `count` waiting customers, all created at one moment."""
    db = sqlite3.connect(db_path)
    db.execute("DELETE FROM customers_onboarding")
    db.execute("DELETE FROM customers_customer")
    now = "2026-01-01 00:00:00"
    db.executemany(
        "INSERT INTO customers_customer (name, email, created_at, attempts, last_error, claimed_by)"
        " VALUES (?, ?, ?, 0, '', '')",
        [(f"Bench {i}", f"bench{i}@example.com", now) for i in range(count)],
    )
    db.commit()
    db.close()


def pending(db_path: Path) -> int:
    """How many customers of `db_path` are not onboarded yet."""
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT count(*) FROM customers_customer WHERE onboarded_at IS NULL").fetchone()[0]
    finally:
        db.close()


def onboarded(db_path: Path) -> int:
    """How many Onboarding rows `db_path` holds."""
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT count(*) FROM customers_onboarding").fetchone()[0]
    finally:
        db.close()

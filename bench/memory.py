"""Resident memory of the onboarding daemon against a bare Python process doing the same job.

The bare peer opens the same SQLite file with the stdlib and marks the same rows; the
daemon loads all of Django. Both are measured in the same run, after they finished the
work, five times each; the median is reported.

    .venv/bin/python bench/memory.py [--runs 5] [--customers 200]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE_PEER = r"""
import sqlite3, sys, time, datetime
db = sqlite3.connect(sys.argv[1], timeout=20)
db.execute("UPDATE customers_customer SET onboarded_at = ? WHERE onboarded_at IS NULL",
           (datetime.datetime.now(datetime.timezone.utc).isoformat(),))
db.commit()
print("done", flush=True)
time.sleep(3600)
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def seed(db_path: Path, count: int) -> None:
    db = sqlite3.connect(db_path)
    db.execute("UPDATE customers_customer SET onboarded_at = NULL")
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
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT count(*) FROM customers_customer WHERE onboarded_at IS NULL").fetchone()[0]
    finally:
        db.close()


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.05)


def measure_daemon(env: dict[str, str], db_path: Path, customers: int) -> int:
    seed(db_path, customers)
    proc = subprocess.Popen([sys.executable, "manage.py", "rundaemon", "onboarding"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: pending(db_path) == 0)
        time.sleep(1.0)  # let the post-work tick settle before reading memory
        return rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def measure_bare(db_path: Path, customers: int) -> int:
    seed(db_path, customers)
    proc = subprocess.Popen([sys.executable, "-c", BARE_PEER, str(db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        return rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        db_path = tmp / "db.sqlite3"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "DAEMONS_RUN_DIR": str(tmp / "run"),
               "DAEMONS_LOG_DIR": str(tmp / "log"), "EMAIL_URL": "dummymail://", "DEBUG": "true"}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        daemon, bare = [], []
        for _ in range(args.runs):
            daemon.append(measure_daemon(env, db_path, args.customers))
            bare.append(measure_bare(db_path, args.customers))
        d, b = statistics.median(daemon), statistics.median(bare)
        print(f"python {sys.version.split()[0]}, {args.runs} runs, {args.customers} customers per run")
        print(f"onboarding daemon (Django): median RSS {d / 1024:.1f} MiB  (runs: {', '.join(f'{x / 1024:.1f}' for x in daemon)})")
        print(f"bare sqlite3 script:        median RSS {b / 1024:.1f} MiB  (runs: {', '.join(f'{x / 1024:.1f}' for x in bare)})")
        print(f"difference: {(d - b) / 1024:.1f} MiB ({d / b:.1f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

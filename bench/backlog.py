"""How fast a backlog of waiting customers clears: one onboarding process against two.

Seeds N customers into a fresh SQLite file, then times `rundaemon onboarding --once`
(one tick keeps claiming batches until nobody waits) with one instance, and with two
instances at once on the same file. Mail goes to Django's dummy backend, so the figure
is the framework's and the database's cost per customer, not a mail server's.

    .venv/bin/python bench/backlog.py [--customers 2000] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import seed  # noqa: E402


def onboarded(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT count(*) FROM customers_onboarding").fetchone()[0]
    finally:
        db.close()


def clear(env: dict[str, str], db_path: Path, customers: int, instances: int) -> float:
    seed(db_path, customers)
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "manage.py", "rundaemon", "onboarding", "--once",
                               "--instance", str(i + 1)], cwd=ROOT, env=env) for i in range(instances)]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a daemon failed")
    elapsed = time.perf_counter() - began
    if onboarded(db_path) != customers:
        raise SystemExit(f"only {onboarded(db_path)} of {customers} onboarded")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
    try:
        db_path = tmp / "db.sqlite3"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "DAEMONS_RUN_DIR": str(tmp / "run"),
               "DAEMONS_LOG_DIR": str(tmp / "log"), "EMAIL_URL": "dummymail://", "DEBUG": "false",
               "SECRET_KEY": "bench-" + "x1y2z3" * 10, "DAEMONS_LOG_LEVEL": "WARNING"}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        one = [clear(env, db_path, args.customers, 1) for _ in range(args.runs)]
        two = [clear(env, db_path, args.customers, 2) for _ in range(args.runs)]
        for label, times in (("one process ", one), ("two processes", two)):
            median = statistics.median(times)
            print(f"{label}: {args.customers} customers in {median:.2f} s median "
                  f"({args.customers / median:.0f} customers/s; runs: {', '.join(f'{t:.2f}' for t in times)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

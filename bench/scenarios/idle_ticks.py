"""Memory and descriptors over many idle ticks of the onboarding daemon, at interval 0.

Runs the real Runner (tick guard, heartbeat, connection handling) in this process against
a fresh SQLite file with no customers, so every tick is an idle claim query. RSS and the
number of open descriptors are read after a warm-up and again at the end. The peer in
the same run is a bare loop making the same kind of query through the stdlib sqlite3.
Exits 1 if RSS grew by 2 MiB or more, or the descriptor count changed.

    .venv/bin/python -m bench.scenarios.idle_ticks [--ticks 20000] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class CountingStop:
    """A stop event that asks the loop to stop after `limit` waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waits = 0

    def is_set(self) -> bool:
        return self.waits >= self.limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return self.is_set()


def run_daemon(ticks: int, warmup: int) -> tuple[int, int, int, int, float]:
    from django.db import connection

    from customers.daemons import OnboardingDaemon
    from daemons.process.runner import Runner

    class EveryMoment(OnboardingDaemon):
        interval = 0

    daemon = EveryMoment()
    daemon.setup()
    runner = Runner(daemon)
    runner.run(CountingStop(warmup))
    connection.close()
    rss0, fds0 = rss_kib(), fd_count()
    began = time.perf_counter()
    runner.run(CountingStop(ticks))
    elapsed = time.perf_counter() - began
    connection.close()
    return rss0, rss_kib(), fds0, fd_count(), ticks / elapsed


def run_peer(db_path: str, ticks: int, warmup: int) -> tuple[int, int, float]:
    db = sqlite3.connect(db_path)
    query = ("SELECT id FROM customers_customer WHERE onboarded_at IS NULL AND failed_at IS NULL "
             "ORDER BY created_at, id LIMIT 50")
    for _ in range(warmup):
        db.execute(query).fetchall()
    rss0 = rss_kib()
    began = time.perf_counter()
    for _ in range(ticks):
        db.execute(query).fetchall()
    elapsed = time.perf_counter() - began
    db.close()
    return rss0, rss_kib(), ticks / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-idle-")
    db_path = f"{tmp}/db.sqlite3"
    os.environ.update({"DATABASE_URL": f"sqlite:///{db_path}", "DAEMONS_RUN_DIR": f"{tmp}/run",
                       "DAEMONS_LOG_DIR": f"{tmp}/log", "DEBUG": "true", "EMAIL_URL": "dummymail://"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "signup_site.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)

    growth, fd_changes, rates, peer_growth, peer_rates = [], [], [], [], []
    for _ in range(args.runs):
        rss0, rss1, fds0, fds1, rate = run_daemon(args.ticks, args.warmup)
        growth.append(rss1 - rss0)
        fd_changes.append(fds1 - fds0)
        rates.append(rate)
        p0, p1, prate = run_peer(db_path, args.ticks, args.warmup)
        peer_growth.append(p1 - p0)
        peer_rates.append(prate)

    print(f"{args.ticks} idle ticks at interval 0, {args.runs} runs (medians)")
    print(f"daemon runner: RSS growth {statistics.median(growth):.0f} KiB (runs: {growth}), "
          f"fd change {statistics.median(fd_changes):.0f} (runs: {fd_changes}), "
          f"{statistics.median(rates):.0f} ticks/s")
    print(f"bare sqlite3 loop: RSS growth {statistics.median(peer_growth):.0f} KiB (runs: {peer_growth}), "
          f"{statistics.median(peer_rates):.0f} queries/s")
    ok = max(growth) < 2048 and all(change == 0 for change in fd_changes)
    print("PASS: growth under 2 MiB and descriptors unchanged" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Signup-to-onboarded latency and backlog throughput on PostgreSQL, with the site and the daemons on different "hosts".

The site (this process, calling `customer_create` as the signup view does) and each
onboarding daemon (`rundaemon onboarding --instance N`) have run directories of their own,
so no Unix socket can carry a wake-up: only NOTIFY can. Daemons keep the default 5 s
interval, so polling alone would average about 2.5 s. Mail goes to a real SMTP server (an
aiosmtpd sink in its own process).

For 1, 2 and 4 daemon instances, and `--runs` times each:
- latency: `--rate` signups per second for `--seconds`; for each signup, `onboarded_at -
  created_at` (the welcome email sent and the onboarding committed);
- throughput: `--backlog` customers waiting, one wake-up, time until all are onboarded;
- connections: the most backends each daemon process and the site held at once
  (pg_stat_activity, by application_name), and how many sessions were opened during the run.
Each figure printed is the median over the runs.

    bash scripts/test-env.d/postgres.sh        # or pass --url to another server
    .venv/bin/python -m bench.scenarios.latency_pg [--instances 1 2 4] [--runs 3] [--rate 20] [--seconds 15] [--pool]

`--pool` runs every process with Django's psycopg pool (OPTIONS["pool"], CONN_MAX_AGE 0)
instead of persistent connections.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from tests.support.processes import terminate
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def default_url() -> str:
    port_file = ROOT / "var" / "pg" / "port"
    port = port_file.read_text().strip() if port_file.exists() else "54329"
    return f"postgres://daemonkit@127.0.0.1:{port}/daemonkit"


def with_database(url: str, name: str, application_name: str | None = None) -> str:
    base = url.rsplit("/", 1)[0] + "/" + name
    return f"{base}?application_name={application_name}" if application_name else base


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import psycopg

        self.args = args
        self.tmp = tmp
        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin = args.url
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = with_database(args.url, self.name)
        self.db = psycopg.connect(self.url, autocommit=True)
        self.smtp_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        # The project refuses a mail backend that discards messages unless DEBUG is on.
        self.env.update({"DJANGO_SETTINGS_MODULE": "signup_site.settings", "DEBUG": str(args.mail == "dummy"),
                         "SECRET_KEY": "bench-" + "x1y2z3" * 10, "DAEMONS_LOG_LEVEL": "WARNING",
                         "EMAIL_URL": f"smtp://127.0.0.1:{self.smtp_port}" if args.mail == "smtp" else "dummymail://",
                         "ALLOWED_HOSTS": "localhost"})
        if args.pool:
            self.env["DJANGO_SETTINGS_MODULE"] = "bench.harness.pool_settings"
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True,
                       env={**self.env, "DATABASE_URL": self.url})
        self.sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.smtp_port}",
                                      "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.daemons: list[subprocess.Popen] = []

    # --- the "site": this process, on a host of its own -------------------------------

    def setup_site(self) -> None:
        os.environ.update({**self.env, "DATABASE_URL": with_database(self.args.url, self.name, "bench-site"),
                           "DAEMONS_RUN_DIR": str(self.tmp / "site" / "run"),
                           "DAEMONS_LOG_DIR": str(self.tmp / "site" / "log")})
        import django

        django.setup()

    # --- daemons -------------------------------------------------------------------------

    def start_daemons(self, count: int) -> None:
        for instance in range(1, count + 1):
            host = self.tmp / f"host{instance}"
            env = {**self.env, "DAEMONS_RUN_DIR": str(host / "run"), "DAEMONS_LOG_DIR": str(host / "log"),
                   "DATABASE_URL": with_database(self.args.url, self.name, f"bench-daemon-{instance}")}
            self.daemons.append(subprocess.Popen(
                [sys.executable, "manage.py", "rundaemon", "onboarding", "--instance", str(instance)], cwd=ROOT,
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: self.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' "
                                     "AND datname = current_database()") >= count,
                 timeout=120, message="daemons listening", interval=0.05)

    def stop_daemons(self) -> None:
        terminate(*self.daemons, timeout=30)
        self.daemons = []

    # --- helpers ---------------------------------------------------------------------------

    def scalar(self, sql: str, *params: object) -> Any:
        row = self.db.execute(sql, params).fetchone()
        assert row is not None  # an aggregate always answers one row
        return row[0]

    def reset(self) -> None:
        self.db.execute("TRUNCATE customers_onboarding, customers_customer, daemons_heartbeat, "
                        "daemons_tickminute RESTART IDENTITY CASCADE")

    def sessions(self) -> int:
        return int(self.scalar("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))

    # --- the measurements ------------------------------------------------------------------

    def latency_run(self, instances: int) -> dict[str, float]:
        from customers.signup import customer_create

        self.reset()
        self.start_daemons(instances)
        peaks: dict[str, int] = defaultdict(int)
        done = threading.Event()

        def sample() -> None:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                while not done.wait(0.2):
                    for app, n in conn.execute("SELECT application_name, count(*) FROM pg_stat_activity "
                                               "WHERE datname = current_database() GROUP BY 1"):
                        peaks[app] = max(peaks[app], n)

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            for i in range(20):  # warm-up, not counted: first connections, imports, template caches
                customer_create(name="Warm", email=f"warm{i}@example.com")
            wait_for(lambda: self.scalar("SELECT count(*) FROM customers_onboarding") == 20, timeout=120,
                     message="warm-up", interval=0.05)
            sampler.start()
            wait_for(lambda: peaks, timeout=120, message="the sampler connected", interval=0.05)
            sessions_before = self.sessions()
            period, total = 1.0 / self.args.rate, int(self.args.rate * self.args.seconds)
            began = time.monotonic()
            for i in range(total):
                delay = began + i * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                customer_create(name="Bench", email=f"b{i}@example.com")
            wait_for(lambda: self.scalar("SELECT count(*) FROM customers_onboarding") == total + 20, timeout=120,
                     message="onboarded", interval=0.05)
            done.set()
            sampler.join()
            opened = self.sessions() - sessions_before
            rows = self.db.execute("SELECT extract(epoch FROM onboarded_at - created_at) * 1000 FROM "
                                   "customers_customer WHERE name = 'Bench'").fetchall()
            latencies = [float(ms) for (ms,) in rows]
            daemon_peak = max(n for app, n in peaks.items() if app.startswith("bench-daemon-"))
            return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                    "p99": percentile(latencies, 99), "max": max(latencies),
                    "daemon_connections": daemon_peak, "site_connections": peaks.get("bench-site", 0),
                    "sessions_per_min": opened / self.args.seconds * 60}
        finally:
            done.set()
            self.stop_daemons()

    def throughput_run(self, instances: int) -> float:
        from daemons.wakeup import wake

        self.reset()
        self.start_daemons(instances)
        try:
            self.db.execute("INSERT INTO customers_customer (name, email, created_at, attempts, last_error, "
                            "claimed_by) SELECT 'Backlog', 'q' || i || '@example.com', now(), 0, '', '' "
                            "FROM generate_series(1, %s) AS i", (self.args.backlog,))
            began = time.monotonic()
            wake("onboarding")
            wait_for(lambda: self.scalar("SELECT count(*) FROM customers_onboarding") == self.args.backlog,
                     timeout=600, message="the backlog cleared", interval=0.05)
            return self.args.backlog / (time.monotonic() - began)
        finally:
            self.stop_daemons()

    def close(self) -> None:
        import psycopg

        self.stop_daemons()
        terminate(self.sink)
        self.db.close()
        from django.db import connections

        connections.close_all()
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=default_url(), help="a PostgreSQL maintenance database URL")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="signups per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each latency run")
    parser.add_argument("--backlog", type=int, default=2000, help="customers waiting in each throughput run")
    parser.add_argument("--pool", action="store_true", help="use Django's psycopg pool in every process")
    parser.add_argument("--mail", choices=["smtp", "dummy"], default="smtp",
                        help="smtp: a real SMTP server; dummy: Django's dummy backend, with DEBUG on "
                             "(the framework's share)")
    args = parser.parse_args()
    if args.pool:
        try:
            import psycopg_pool  # noqa: F401 - only its presence is checked
        except ImportError:
            raise SystemExit("--pool needs psycopg-pool: pip install -r requirements-dev.txt") from None
    with tempfile.TemporaryDirectory(prefix="bench-latency-pg-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.setup_site()
            print(f"PostgreSQL, {args.rate:g} signups/s for {args.seconds:g} s, medians of {args.runs} runs, "
                  f"{'pool' if args.pool else 'persistent connections'}, {args.mail} mail; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            print("instances  p50 ms  p95 ms  p99 ms  max ms  backlog/s  conns/daemon  conns/site  sessions/min")
            for instances in args.instances:
                runs = [bench.latency_run(instances) for _ in range(args.runs)]
                rates = [bench.throughput_run(instances) for _ in range(args.runs)]

                def med(key: str, runs: list[dict[str, float]] = runs) -> float:
                    return statistics.median(run[key] for run in runs)

                print(f"{instances:>9}  {med('p50'):>6.1f}  {med('p95'):>6.1f}  {med('p99'):>6.1f}  "
                      f"{med('max'):>6.0f}  {statistics.median(rates):>9.0f}  {med('daemon_connections'):>12.0f}  "
                      f"{med('site_connections'):>10.0f}  {med('sessions_per_min'):>12.1f}", flush=True)
        finally:
            bench.close()


if __name__ == "__main__":
    main()

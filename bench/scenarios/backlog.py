"""How fast a backlog of waiting customers clears: one onboarding process against two.

Seeds N customers into a fresh SQLite file, then times `rundaemon onboarding --once`
(one tick keeps claiming batches until nobody waits) with one instance, and with two
instances at once on the same file. With `--mail dummy` (the default) mail goes to
Django's dummy backend, so the figure is the framework's and the database's cost per
customer, not a mail server's; `--mail smtp` sends to a real SMTP server (an aiosmtpd
sink in its own process). `--batch` sets ONBOARDING_BATCH_SIZE.

    .venv/bin/python -m bench.scenarios.backlog [--customers 2000] [--runs 3] [--mail dummy|smtp] [--batch 50]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.customers import onboarded, seed
from tests.support.net import free_port, port_open
from tests.support.processes import terminate
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def clear(env: dict[str, str], db_path: Path, customers: int, instances: int) -> tuple[float, float]:
    """Seconds until `instances` daemons onboarded all `customers`, and the CPU seconds the daemons used."""
    seed(db_path, customers)
    cpu_before = children_cpu()
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "manage.py", "rundaemon", "onboarding", "--once",
                               "--instance", str(i + 1)], cwd=ROOT, env=env) for i in range(instances)]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a daemon failed")
    elapsed = time.perf_counter() - began
    if onboarded(db_path) != customers:
        raise SystemExit(f"only {onboarded(db_path)} of {customers} onboarded")
    return elapsed, children_cpu() - cpu_before


def children_cpu() -> float:
    """User and system CPU seconds of every child process waited for so far (on a shared machine,
    steadier than the wall clock)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mail", choices=["dummy", "smtp"], default="dummy")
    parser.add_argument("--batch", type=int, default=None, help="ONBOARDING_BATCH_SIZE (default: the setting's)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
    sink: subprocess.Popen | None = None
    try:
        db_path = tmp / "db.sqlite3"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "DAEMONS_RUN_DIR": str(tmp / "run"),
               "DAEMONS_LOG_DIR": str(tmp / "log"), "SECRET_KEY": "bench-" + "x1y2z3" * 10,
               "DAEMONS_LOG_LEVEL": "WARNING"}
        if args.batch is not None:
            env["ONBOARDING_BATCH_SIZE"] = str(args.batch)
        if args.mail == "smtp":
            port = free_port()
            sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                                     "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            wait_for(lambda: port_open(port), timeout=120, message="the SMTP sink listening", interval=0.05)
            env.update({"EMAIL_URL": f"smtp://127.0.0.1:{port}", "DEBUG": "false"})
        else:
            # The project refuses a mail backend that discards messages unless DEBUG is on.
            env.update({"EMAIL_URL": "dummymail://", "DEBUG": "true"})
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        one = [clear(env, db_path, args.customers, 1) for _ in range(args.runs)]
        two = [clear(env, db_path, args.customers, 2) for _ in range(args.runs)]
        for label, runs in (("one process ", one), ("two processes", two)):
            times = [elapsed for elapsed, _ in runs]
            median = statistics.median(times)
            cpu = statistics.median(used for _, used in runs)
            print(f"{label}: {args.customers} customers in {median:.2f} s median "
                  f"({args.customers / median:.0f} customers/s; runs: {', '.join(f'{t:.2f}' for t in times)}); "
                  f"daemons' CPU {cpu:.2f} s median ({1000 * cpu / args.customers:.2f} ms per customer, "
                  "start-up included)")
    finally:
        if sink is not None:
            terminate(sink)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

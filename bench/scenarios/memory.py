"""Memory of daemons run standalone and under the supervisor, against the bare-script floor (RSS and PSS).

RSS counts every page a process maps, shared or not, so summing it over forked children
counts the supervisor's Django once per child. PSS (`/proc/PID/smaps_rollup`) splits each
shared page between the processes sharing it: the sum of PSS is what the group really costs.

Cases, each measured `--runs` times with the median reported:
- 1, 2 and 5 daemons, each its own `rundaemon NAME` process;
- the same daemons forked by one supervisor (the supervisor counted too);
- the onboarding daemon alone after draining `--customers` signups;
- a bare Python script doing the same drain with the stdlib `sqlite3` module: the floor.

    .venv/bin/python -m bench.scenarios.memory [--runs 5] [--customers 2000] [--settle 3]
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import procstat, servers
from bench.harness.customers import pending, seed
from tests.support.processes import terminate
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
# The showcase has two daemons; the framework's test app provides the other three of five.
DAEMONS = ["onboarding", "digest", "counter", "idle", "writer"]
SETTINGS = "tests.settings"

BARE_PEER = r"""
import sqlite3, sys, time, datetime
db = sqlite3.connect(sys.argv[1], timeout=20)
db.execute("UPDATE customers_customer SET onboarded_at = ? WHERE onboarded_at IS NULL",
           (datetime.datetime.now(datetime.timezone.utc).isoformat(),))
db.commit()
print("done", flush=True)
time.sleep(3600)
"""

# The supervisor for an explicit list of daemons, even a list of one (`rundaemon NAME` would run it standalone).
SUPERVISOR = r"""
import sys, django
django.setup()
from daemons.process import children, supervisor
sys.exit(supervisor.run_foreground(children.child_specs(sys.argv[1:])))
"""


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    pss_kib: int

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss_kib + other.rss_kib, self.pss_kib + other.pss_kib)


def memory(pid: int) -> Memory:
    """RSS and PSS of `pid`, in KiB; a daemon gone before it is measured is an error, not a zero."""
    return Memory(*procstat.rollup_kib(pid))


def total(pids: list[int]) -> Memory:
    result = Memory(0, 0)
    for pid in pids:
        result = result + memory(pid)
    return result


def holder(run_dir: Path, name: str) -> int | None:
    from daemons.process.pidfile import read_holder

    return read_holder(run_dir / f"{name}.pid", wait=0)


def popen(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_group(env: dict[str, str], names: list[str], *, supervised: bool, settle: float) -> Memory:
    """Start `names` (standalone or supervised), wait until every one holds its PID file, settle, then sum."""
    run_dir = Path(env["DAEMONS_RUN_DIR"])
    if supervised:
        procs = [popen(env, "-c", SUPERVISOR, *names)]
    else:
        procs = [popen(env, "manage.py", "rundaemon", name) for name in names]
    try:
        pids = [wait_for(lambda n=n: holder(run_dir, n), timeout=120, message=f"{n} running", interval=0.05)
                for n in names]
        time.sleep(settle)  # let each daemon run a few ticks before reading its memory
        return total(pids + ([procs[0].pid] if supervised else []))
    finally:
        terminate(*procs, timeout=30)


def measure_drain(env: dict[str, str], db_path: Path, customers: int, settle: float) -> Memory:
    seed(db_path, customers)
    [proc] = procs = [popen(env, "manage.py", "rundaemon", "onboarding")]
    try:
        wait_for(lambda: pending(db_path) == 0, timeout=600, message="the drain", interval=0.05)
        time.sleep(settle)
        return memory(proc.pid)
    finally:
        terminate(*procs, timeout=30)


def measure_bare(db_path: Path, customers: int) -> Memory:
    seed(db_path, customers)
    proc = subprocess.Popen([sys.executable, "-c", BARE_PEER, str(db_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    try:
        assert proc.stdout.readline().strip() == "done"
        return memory(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds the daemons run before measuring")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    # With DEBUG off the showcase refuses a mail backend that doesn't deliver (customers.E011): a real SMTP server.
    smtp = servers.start_smtp_sink()
    try:
        db_path = tmp / "db.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update({"DJANGO_SETTINGS_MODULE": SETTINGS, "DATABASE_URL": f"sqlite:///{db_path}",
                    "DAEMONS_RUN_DIR": str(tmp / "run"), "DAEMONS_LOG_DIR": str(tmp / "log"),
                    "EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}", "DEBUG": "false",
                    "SECRET_KEY": secrets.token_urlsafe(50), "TESTAPP_INTERVAL": "1"})
        os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DAEMONS_RUN_DIR")})
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        import django

        django.setup()

        cases: dict[str, list[Memory]] = {}
        for _ in range(args.runs):
            for count in (1, 2, 5):
                for supervised in (False, True):
                    key = f"{count} daemon{'s' if count > 1 else ''}, {'supervisor' if supervised else 'standalone'}"
                    cases.setdefault(key, []).append(
                        measure_group(env, DAEMONS[:count], supervised=supervised, settle=args.settle))
            cases.setdefault(f"onboarding after {args.customers} signups", []).append(
                measure_drain(env, db_path, args.customers, args.settle))
            cases.setdefault("bare sqlite3 script (floor)", []).append(measure_bare(db_path, args.customers))

        print(f"python {sys.version.split()[0]}, {args.runs} runs, medians in MiB; daemons: {', '.join(DAEMONS)}")
        print(f"{'case':<40} {'RSS':>7} {'PSS':>7}   PSS per run")
        for key, runs in cases.items():
            rss = statistics.median(m.rss_kib for m in runs)
            pss = statistics.median(m.pss_kib for m in runs)
            print(f"{key:<40} {mib(rss):>7} {mib(pss):>7}   {', '.join(mib(m.pss_kib) for m in runs)}")
    finally:
        smtp.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

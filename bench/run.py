"""Ours against the peers, side by side in one run: drain, latency, memory, idle cost.

    .venv/bin/python -m bench.run            the full run (`make bench`)
    .venv/bin/python -m bench.run --quick    about 3 minutes, small N, 1 repetition (`make bench-quick`)

Starts its own Redis, PostgreSQL cluster and SMTP sink on free loopback ports and stops
only those, also on Ctrl-C. Repetitions interleave the systems, in a rotated order. See
docs/performance.md for what each workload measures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import procstat, servers
from bench.harness.servers import ServerError, ServerSet
from bench.harness.systems import BY_KEY, FLOOR_CONNECTIONS, OURS, ROOT, SYSTEMS, System, unavailable
from bench.peers.counter import total as counted_queries

PY = sys.executable
SECRET_KEY = "bench-" + "k7Qz9vX2pL" * 6
# The reference for ours' memory: a process that loads the same settings and nothing else.
BARE_SETUP = "import django, sys; django.setup(); print('ready', flush=True); sys.stdin.read()"
FULL = {"customers": 5000, "runs": 3, "rate": 20.0, "latency_seconds": 30.0, "idle_seconds": 60.0}
QUICK = {"customers": 500, "runs": 1, "rate": 20.0, "latency_seconds": 10.0, "idle_seconds": 15.0}


class BenchError(Exception):
    """A system failed its workload; the message says which and where its log is."""


class Progress:
    """One status line, rewritten in place on a terminal; on a pipe, only each new phase."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.phase = ""

    def show(self, phase: str, detail: str = "") -> None:
        if self.tty:
            sys.stderr.write(f"\r\033[K{phase} {detail}")
            sys.stderr.flush()
        elif phase != self.phase:
            print(phase, file=sys.stderr, flush=True)
        self.phase = phase

    def done(self, line: str) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        print(line, file=sys.stderr, flush=True)
        self.phase = ""


@dataclass
class Worker:
    system: System
    proc: subprocess.Popen
    directory: Path
    env: dict[str, str]
    redis: servers.Server | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return procstat.tree(self.proc.pid) if self.proc.poll() is None else []

    def broker_pids(self) -> list[int]:
        """The broker's process, if this worker has one of its own."""
        return [self.redis.pid] if self.redis is not None and self.redis.pid is not None else []

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.system.key} exited with status {self.proc.returncode}; "
                             f"see {self.directory / 'worker.log'}")

    def queries(self) -> int:
        count = counted_queries(self.env["BENCH_COUNTER_DIR"])
        if self.redis is not None:
            count += servers.redis_commands(self.redis.port)
        return count

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            tree = self.pids()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the worker's own session: it and its children
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
            # Children in process groups of their own (a supervisor's) that outlived it.
            for pid in tree[1:]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.redis is not None:
            self.redis.stop()


class Bench:
    def __init__(self, args: argparse.Namespace, systems: list[System], workdir: Path) -> None:
        self.args = args
        self.systems = systems
        self.workdir = workdir
        self.servers = ServerSet()
        self.progress = Progress()
        self.smtp: servers.Server | None = None
        self.pg: servers.Server | None = None
        self.sqlite_template = workdir / "template.sqlite3"
        self.workers: list[Worker] = []
        self.records: list[dict[str, Any]] = []
        self.django_setup: list[dict[str, Any]] = []  # a bare django.setup() of ours' settings, each repetition

    # --- set-up -------------------------------------------------------------------------

    def base_env(self, system: System, directory: Path, database_url: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DAEMONS_"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": "bench.harness.settings", "PYTHONPATH": str(ROOT), "DEBUG": "false",
            "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url,
            "EMAIL_URL": f"smtp://127.0.0.1:{self.smtp.port if self.smtp else 25}",
            "DAEMONS_RUN_DIR": str(directory / "run"), "DAEMONS_LOG_DIR": str(directory / "log"),
            "DAEMONS_LOG_LEVEL": "WARNING", "BENCH_PEER": system.peer,
            "BENCH_COUNTER_DIR": str(directory / "queries"), "BENCH_HUEY_FILE": str(directory / "huey.sqlite3"),
        })
        (directory / "queries").mkdir(parents=True, exist_ok=True)
        return env

    def start_servers(self) -> None:
        self.progress.show("starting the SMTP sink")
        self.smtp = self.servers.add(servers.start_smtp_sink())
        if any(s.database == "postgresql" for s in self.systems):
            self.progress.show("starting PostgreSQL")
            self.pg = self.servers.add(servers.start_postgres())
        self.progress.show("migrating the template databases")
        # Migrated with every peer's apps, so each system's copy has the tables it needs.
        for database, url in (("sqlite", f"sqlite:///{self.sqlite_template}"),
                              ("postgresql", servers.pg_create_database(self.pg.port, "bench_template")
                               if self.pg else "")):
            if not url:
                continue
            env = {**self.base_env(BY_KEY[OURS], self.workdir / "migrate", url), "BENCH_ALL_PEERS": "1"}
            run = subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, capture_output=True,
                                 text=True)
            if run.returncode != 0:
                raise BenchError(f"migrating the {database} template failed: {run.stderr.strip()[-500:]}")
        db = sqlite3.connect(self.sqlite_template)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to copy
        db.close()

    def database(self, system: System, directory: Path, run: int) -> str:
        if system.database == "postgresql":
            assert self.pg is not None, "start_servers() starts PostgreSQL when a system uses it"
            return servers.pg_create_database(self.pg.port, f"bench_{system.key.replace('-', '_')}_{run}",
                                              template="bench_template")
        path = directory / "db.sqlite3"
        shutil.copyfile(self.sqlite_template, path)
        return f"sqlite:///{path}"

    def driver(self, env: dict[str, str], *argv: str, timeout: float) -> dict[str, Any]:
        run = subprocess.run([PY, "-m", "bench.harness.driver", *argv], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0:
            raise BenchError(f"driver {' '.join(argv)} failed: {(run.stderr or run.stdout).strip()[-800:]}")
        return json.loads(run.stdout.strip().splitlines()[-1])

    # --- measuring ------------------------------------------------------------------------

    def onboarded(self, env: dict[str, str]) -> tuple[int, datetime.datetime | None, datetime.datetime | None]:
        """How many customers are onboarded, and when the first and the last one were."""
        sql = ("SELECT count(*), min(onboarded_at), max(onboarded_at) FROM customers_customer "
               "WHERE onboarded_at IS NOT NULL")
        url = env["DATABASE_URL"]
        if url.startswith("sqlite:///"):
            db = sqlite3.connect(url[len("sqlite:///"):], timeout=20)
            try:
                count, *times = db.execute(sql).fetchone()
            finally:
                db.close()
            first, last = (datetime.datetime.fromisoformat(t).replace(tzinfo=datetime.UTC) if t else None
                           for t in times)
            return count, first, last
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute(sql).fetchone()
        assert row is not None, "an aggregate without GROUP BY returns one row"
        count, first, last = row
        return count, first, last

    def run_system(self, system: System, run: int) -> None:
        tag = f"[run {run + 1}/{self.args.runs}] {system.key}"
        directory = self.workdir / f"{system.key}-{run}"
        directory.mkdir(parents=True)
        env = self.base_env(system, directory, "")
        env["DATABASE_URL"] = self.database(system, directory, run)
        worker = Worker(system, None, directory, env)  # type: ignore[arg-type]
        if system.broker:
            worker.redis = servers.start_redis()
            env["BENCH_BROKER_URL"] = f"redis://127.0.0.1:{worker.redis.port}/0"
        n = self.args.customers
        self.progress.show(f"{tag}: seeding {n} waiting customers")
        try:
            self.driver(env, "seed", str(n), timeout=600)
            command = list(system.command)
            if system.key in FLOOR_CONNECTIONS:
                assert self.smtp is not None, "run() starts the servers first"
                command += [env["DATABASE_URL"][len("sqlite:///"):], str(self.smtp.port),
                            str(FLOOR_CONNECTIONS[system.key])]
            log = open(directory / "worker.log", "w")
            began = datetime.datetime.now(datetime.UTC)
            worker.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            log.close()
        except BaseException:
            if worker.redis:
                worker.redis.stop()
            raise
        self.workers.append(worker)
        deadline = time.monotonic() + 120 + n / 10
        while True:
            count, first, last = self.onboarded(env)
            self.progress.show(f"{tag}: drain", f"{count}/{n} onboarded")
            if count >= n:
                break
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{system.key} onboarded only {count} of {n}; see {directory / 'worker.log'}")
            time.sleep(0.1)
        assert first is not None and last is not None, "a drain that onboarded n >= 1 customers has times"
        seconds = (last - began).total_seconds()
        result = worker.result
        result.update(system=system.key, run=run, drain_per_s=n / seconds, drain_seconds=seconds,
                      first_onboarded_s=(first - began).total_seconds())
        result["rss_drain_kib"], result["pss_drain_kib"] = procstat.memory_kib(worker.pids())
        if system.key not in FLOOR_CONNECTIONS:  # the floor's stdlib sqlite3 isn't counted
            result["queries_per_customer"] = worker.queries() / n
        if system.latency:
            self.progress.show(f"{tag}: {self.args.rate:g} signups/s for {self.args.latency_seconds:g} s")
            latencies = self.driver(env, "signups", str(self.args.rate), str(self.args.latency_seconds),
                                    timeout=self.args.latency_seconds + 300)["latencies_ms"]
            worker.check_alive()
            result.update(report.percentiles(latencies))
        if not system.idle:
            worker.stop()
            self.records.append(result)
        self.progress.done(f"{tag}: {report.one_line(result)}")

    def measure_django_setup(self, run: int) -> None:
        """RSS and PSS of a bare `django.setup()` with ours' settings and environment, read as ours' are."""
        directory = self.workdir / f"django-setup-{run}"
        directory.mkdir(parents=True)
        env = self.base_env(BY_KEY[OURS], directory, f"sqlite:///{directory / 'db.sqlite3'}")
        proc = subprocess.Popen([PY, "-c", BARE_SETUP], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all PIPE
        try:
            if proc.stdout.readline().strip() != "ready":
                raise BenchError(f"a bare django.setup() failed: {proc.communicate(timeout=30)[1].strip()[-800:]}")
            rss, pss = procstat.memory_kib(procstat.tree(proc.pid))
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        self.django_setup.append({"run": run, "rss_kib": rss, "pss_kib": pss})

    def measure_idle(self, run: int) -> None:
        """Every worker of this repetition idles at once; each one's own CPU and queries are read."""
        idle = [w for w in self.workers if w.system.idle]
        seconds = self.args.idle_seconds
        if idle:
            for worker in idle:
                worker.check_alive()
            time.sleep(2)  # let the last latency signups' ticks finish before the window opens
            start = {id(w): (procstat.cpu_seconds(w.pids()), w.queries(),
                             procstat.cpu_seconds(w.broker_pids())) for w in idle}
            ends = time.monotonic() + seconds
            while (left := ends - time.monotonic()) > 0:
                self.progress.show(f"[run {run + 1}/{self.args.runs}] idle: {len(idle)} workers", f"{left:.0f} s left")
                time.sleep(min(1.0, left))
            for worker in idle:
                worker.check_alive()
                cpu0, queries0, broker0 = start[id(worker)]
                pids = worker.pids()
                per_minute = 60 / seconds
                worker.result["idle_cpu_s_per_min"] = (procstat.cpu_seconds(pids) - cpu0) * per_minute
                # The second INFO call counts itself: take it off.
                worker.result["idle_queries_per_min"] = (worker.queries() - queries0 - (1 if worker.redis else 0)
                                                         ) * per_minute
                worker.result["rss_idle_kib"], worker.result["pss_idle_kib"] = procstat.memory_kib(pids)
                if worker.redis:
                    worker.result["broker_cpu_s_per_min"] = (procstat.cpu_seconds(worker.broker_pids()) - broker0
                                                             ) * per_minute
                    worker.result["broker_rss_kib"] = procstat.memory_kib(worker.broker_pids())[0]
            self.progress.done(f"[run {run + 1}/{self.args.runs}] idle: measured {len(idle)} workers "
                               f"over {seconds:g} s")
        for worker in self.workers:
            worker.stop()
            if worker.system.idle:
                self.records.append(worker.result)
        self.workers = []

    def run(self) -> list[dict[str, Any]]:
        self.start_servers()
        for run in range(self.args.runs):
            if any(system.ours for system in self.systems):
                self.measure_django_setup(run)
            shift = run % len(self.systems)
            for system in self.systems[shift:] + self.systems[:shift]:
                self.run_system(system, run)
            self.measure_idle(run)
        return self.records

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.servers.stop_all()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, 1 repetition, short windows")
    parser.add_argument("--customers", type=int, help="customers waiting at the start of each drain")
    parser.add_argument("--runs", type=int, help="repetitions (medians and min-max over them)")
    parser.add_argument("--rate", type=float, help="signups a second in the latency workload")
    parser.add_argument("--latency-seconds", type=float, help="how long the latency workload lasts")
    parser.add_argument("--idle-seconds", type=float, help="the idle window for CPU and queries")
    parser.add_argument("--systems", help="comma-separated keys (default: all): "
                        + ", ".join(s.key for s in SYSTEMS))
    parser.add_argument("--out", type=Path, help="where results.json, results.md and plots go "
                        "(default: var/bench/full or var/bench/quick)")
    parser.add_argument("--docs", action="store_true",
                        help="also put the table and plots into docs/performance.md and docs/img/")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("customers", "runs"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    for key in ("rate", "latency_seconds", "idle_seconds"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be greater than 0")
    if args.systems:
        keys = [key.strip() for key in args.systems.split(",") if key.strip()]
        unknown = [key for key in keys if key not in BY_KEY]
        if unknown:
            parser.error(f"unknown system {', '.join(unknown)}; choose from {', '.join(BY_KEY)}")
        args.systems = [BY_KEY[key] for key in keys]
    else:
        args.systems = list(SYSTEMS)
    args.out = args.out or ROOT / "var" / "bench" / ("quick" if args.quick else "full")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Set explicitly: a harness started in the background inherits SIGINT ignored, and a
    # SIGTERM must stop what it started as Ctrl-C does.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    systems, skipped = [], {}
    for system in args.systems:
        reason = unavailable(system)
        if reason:
            skipped[system.key] = reason
            print(f"{system.key}: {reason}", file=sys.stderr)
        else:
            systems.append(system)
    if not systems:
        print("bench: no system can run here", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(args, systems, workdir)
    started = datetime.datetime.now(datetime.UTC)
    failed = True
    temp_dirs = [str(workdir)]
    try:
        records = bench.run()
        failed = False
    except (BenchError, ServerError, subprocess.TimeoutExpired) as exc:
        bench.progress.done(f"bench: {exc}")
        return 1
    except KeyboardInterrupt:
        bench.progress.done("bench: interrupted; stopping what it started")
        return 130
    finally:
        versions = report.versions(bench.servers.servers)
        temp_dirs += [str(server.directory) for server in bench.servers.servers]
        bench.close()
        if failed:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "started": started.isoformat(timespec="seconds"), "machine": report.machine(), "versions": versions,
        "settings": {k: getattr(args, k) for k in ("customers", "runs", "rate", "latency_seconds", "idle_seconds")},
        "quick": args.quick, "systems": {s.key: s.label for s in systems}, "skipped": skipped, "records": records,
        "django_setup": bench.django_setup,
        "temp_dirs": temp_dirs,  # all removed by now; a test checks that nothing runs from them
    }
    paths = report.write(results, args.out, docs=args.docs)
    print(paths["markdown"].read_text())
    print(f"results: {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

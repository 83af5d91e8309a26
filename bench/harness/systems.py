"""The systems compared: ours and the peers a user would pick instead, each with its worker command."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MANAGE = [PY, str(ROOT / "manage.py")]


@dataclass(frozen=True)
class System:
    key: str
    label: str
    command: tuple[str, ...]
    database: str = "sqlite"  # or "postgresql"
    peer: str = ""  # $BENCH_PEER: which tasks the driver enqueues and the worker imports
    broker: bool = False  # needs a Redis of its own
    latency: bool = True  # takes part in the latency workload
    idle: bool = True  # keeps running, so has an idle cost
    needs: tuple[str, ...] = ()  # importable modules it depends on

    @property
    def ours(self) -> bool:
        return self.key.startswith("ours")


def _celery(concurrency: int) -> tuple[str, ...]:
    return (PY, "-m", "celery", "-A", "bench.peers.celery_app", "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--loglevel", "WARNING")


SYSTEMS = (
    System("ours-sqlite", "ours: rundaemon onboarding, SQLite", (*MANAGE, "rundaemon", "onboarding")),
    System("ours-pg", "ours: rundaemon onboarding, PostgreSQL", (*MANAGE, "rundaemon", "onboarding"),
           database="postgresql"),
    System("ours-supervised", "ours: rundaemon --all (supervisor), SQLite", (*MANAGE, "rundaemon", "--all")),
    System("dbworker", "django-tasks db_worker, SQLite", (*MANAGE, "db_worker", "--no-startup-delay", "--no-reload",
                                                          "--verbosity", "0"),
           peer="dbworker", needs=("django_tasks", "django_tasks_db")),
    System("celery-c1", "Celery + Redis, concurrency 1", _celery(1), peer="celery", broker=True, needs=("celery",)),
    System("celery-c2", "Celery + Redis, concurrency 2", _celery(2), peer="celery", broker=True, needs=("celery",)),
    System("celery-c1-reuse", "Celery + Redis, concurrency 1, reused SMTP connection", _celery(1),
           peer="celery-reuse", broker=True, needs=("celery",)),
    System("huey", "Huey, SqliteHuey", (*MANAGE, "run_huey", "--quiet"), peer="huey", needs=("huey",)),
    System("floor", "floor: stdlib sqlite3 + smtplib, one connection", (PY, "-m", "bench.peers.floor"),
           latency=False, idle=False, needs=("aiosmtpd",)),
    System("floor-2", "floor: stdlib sqlite3 + smtplib, two connections",
           (PY, "-m", "bench.peers.floor"), latency=False, idle=False, needs=("aiosmtpd",)),
)
FLOOR_CONNECTIONS = {"floor": 1, "floor-2": 2}  # the floors, by key: how many SMTP connections each sends over
BY_KEY = {system.key: system for system in SYSTEMS}
OURS = "ours-sqlite"  # the row every ratio is taken against


def unavailable(system: System) -> str:
    """Why `system` can't run here, or "" if it can."""
    missing = [module for module in system.needs if importlib.util.find_spec(module) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (pip install -r bench/requirements.txt)"
    return ""

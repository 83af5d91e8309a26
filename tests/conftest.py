"""Shared fixtures: a clock, stop events, and real daemon processes on the test database."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.waiting import wait_for as wait_for  # re-exported: tests import it from here

pytest_plugins = ["daemons.testing", "tests.pg", "tests.sentry_sink", "tests.other_user", "tests.distribution"]

BASE_DIR = Path(settings.BASE_DIR)



@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under `make test`, temporary paths start right in the run's directory.

    A Unix socket path holds 108 bytes at most, and pytest's own layout (pytest-of-USER/pytest-N/popen-gwN/)
    leaves a test's wake-up socket and supervisord's socket too little of them. pytest-xdist's workers get
    BASETEMP/popen-gwN from this.
    """
    if config.option.basetemp is None and os.environ.get("TEST_ENV_DIR"):
        config.option.basetemp = os.path.join(os.environ["TEST_ENV_DIR"], "t")


def matched(pattern: str, text: str, flags: int = 0, *, group: int = 0) -> str:
    """Group `group` of the first match of `pattern` in `text`; fail the test, showing the text, if none."""
    match = re.search(pattern, text, flags)
    if match is None:
        pytest.fail(f"no match for {pattern!r} in:\n{text[:2000]}")
    return match.group(group)


def default_signals() -> None:
    """`preexec_fn` for every child a test starts: SIGINT and SIGTERM do their default there.

    A shell starts a background job (`make test &`) with SIGINT ignored, and a child inherits that:
    Ctrl-C, or a test's SIGINT, would then do nothing to it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fixed_now() -> datetime:
    return datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def stop_event() -> threading.Event:
    return threading.Event()


@dataclass
class Project:
    """Runs `manage.py` in real subprocesses against the test database and a temp run dir.

    It remembers what it started (every run directory a command was given, every process from
    `popen`), so that `stop_all` leaves nothing running, whatever the test did or failed to do.
    """

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    run_dirs: set[Path] = field(default_factory=set)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.env["DAEMONS_RUN_DIR"])

    @property
    def log_dir(self) -> Path:
        return Path(self.env["DAEMONS_LOG_DIR"])

    def pid_file(self, name: str, instance: int = 0) -> Path:
        return self.run_dir / (f"{name}.{instance}.pid" if instance else f"{name}.pid")

    def log_file(self, name: str, instance: int = 0) -> Path:
        return self.log_dir / (f"{name}.{instance}.log" if instance else f"{name}.log")

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {**self.env, **(extra or {})}
        if env.get("DAEMONS_RUN_DIR"):
            self.run_dirs.add(Path(env["DAEMONS_RUN_DIR"]))
        return env

    def manage(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self._env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            preexec_fn=default_signals,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            stdout=kwargs.pop("stdout", subprocess.PIPE),
            stderr=kwargs.pop("stderr", subprocess.PIPE),
            text=True,
            preexec_fn=kwargs.pop("preexec_fn", default_signals),
            **kwargs,
        )
        self.processes.append(process)
        return process

    def start(self, name: str, *extra: str, env: dict[str, str] | None = None) -> int:
        """`rundaemon NAME --detach`; return the PID it printed."""
        result = self.manage("rundaemon", name, "--detach", *extra, env=env)
        assert result.returncode == 0, f"start failed: {result.stdout}{result.stderr}"
        return int(result.stdout.split("(pid ")[1].split(")")[0])

    def stop_all(self) -> None:
        """Stop every daemon with a PID file in a run directory we used (SIGTERM, then SIGKILL), then kill
        whatever `popen` started that is still running."""
        from daemons.console.stopping import stop

        for run_dir in {self.run_dir, *self.run_dirs}:
            for pid_path in run_dir.glob("*.pid"):
                stop(pid_path, timeout=10, kill=True)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def process_env(tmp: Path) -> dict[str, str]:
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DAEMONS_RUN_DIR": str(tmp / "run"),
            "DAEMONS_LOG_DIR": str(tmp / "log"),
            "EMAIL_URL": f"filemail:///{tmp / 'mail'}",
            "TESTAPP_INTERVAL": "0.2",
        }
    )
    if db["ENGINE"] == "django.db.backends.sqlite3":
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    return env


@pytest.fixture
def project(tmp_path: Path, transactional_db) -> Iterator[Project]:
    """Real `manage.py` processes sharing this test's database (committed, not rolled back)."""
    proj = Project(tmp_path, process_env(tmp_path))
    try:
        yield proj
    finally:
        proj.stop_all()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Rate-limit counters live in the cache: no test may inherit another's."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()

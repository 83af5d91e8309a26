"""A throwaway copy of the project, run with the real venv, for tests that generate or edit code."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from tests.conftest import default_signals

BASE_DIR = Path(settings.BASE_DIR)
VENV = BASE_DIR / ".venv"
# Caches and outputs, some written while the copy is made by tests in another pytest-xdist worker
# (Hypothesis's example database, for one).
_SKIP = {".venv", "var", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
         "test-artifacts", ".env"}
# Variables that point a process at the outer test run's database, settings or directories.
# TEST_ENV_DIR too: a test run in the copy would make its temporary directories there, and pytest empties
# that base directory first, the outer run's temporary directories included.
_DROP = ("DJANGO_", "PYTEST", "DAEMONS_", "DATABASE_URL", "EMAIL_URL", "TEST_SQLITE_PATH", "TESTAPP_", "TEST_ENV_DIR")


def project_files(directory: str, names: list[str]) -> list[str]:
    """`shutil.copytree`'s ignore: what a copy of the project leaves out."""
    return [name for name in names if name in _SKIP]


@dataclass
class ProjectCopy:
    root: Path
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")

    def run(self, *args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              preexec_fn=default_signals)

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(self.python, "manage.py", *args, timeout=timeout)


def copy_project(dest: Path) -> ProjectCopy:
    """Copy the project's files (not .venv, var or .git) to `dest`, with .venv linked to the real one.

    The copy runs with the project's default settings and keeps its database, PID
    files and logs under its own var/.
    """
    shutil.copytree(BASE_DIR, dest, ignore=project_files)
    if VENV.exists():
        (dest / ".venv").symlink_to(VENV)
    else:  # the tests run from some other interpreter: give the copy the same one
        (dest / ".venv" / "bin").mkdir(parents=True)
        (dest / ".venv" / "bin" / "python").symlink_to(Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env["PATH"] = f"{dest / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = env.get("HOME", str(dest))
    return ProjectCopy(dest, env)

"""A throwaway copy of the project, run with the real venv, for tests that generate or edit code."""
from __future__ import annotations

import os
import re
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
# that base directory first, the outer run's temporary directories included. ENV_FILE: the copy reads its own
# .env, as a fresh checkout does.
_DROP = ("DJANGO_", "PYTEST", "DAEMONS_", "DATABASE_URL", "EMAIL_URL", "TEST_SQLITE_PATH", "TESTAPP_", "TEST_ENV_DIR",
         "ENV_FILE")


# What `make`, a venv or the test run exports, which a terminal a user opens does not have.
_SHELL_ONLY = ("MAKE", "MFLAGS", "VIRTUAL_ENV", "PYTHON", "TEST_", "KEEP_TEST_PG", "DEBUG", "SECRET_KEY")


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


def terminal_env() -> dict[str, str]:
    """A new terminal's environment: this process's, less every setting the project reads (.env.example lists
    them all), the test run's variables and what make or a venv set. What the project then sees comes from its
    own `.env` and defaults, as for a user who opens another terminal."""
    settings_read = set(re.findall(r"^#? ?([A-Z_]+)=", (BASE_DIR / ".env.example").read_text(), flags=re.M))
    return {name: value for name, value in os.environ.items()
            if name not in settings_read and not name.startswith(_DROP + _SHELL_ONLY)}

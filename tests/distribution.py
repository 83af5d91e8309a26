"""The distribution as a user gets it: the sdist and the wheel built from it, once per test session (a plugin).

Built from a copy of what the distribution needs (DISTRIBUTION_FILES and daemons/), so that a build never
writes into the checkout that other tests read.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

# What the distribution is built from (besides daemons/): the metadata, the sdist's manifest, the license.
DISTRIBUTION_FILES = ("pyproject.toml", "MANIFEST.in", "LICENSE")
TIMEOUT = 300  # pip and builds are slow on a loaded machine; this only costs time when something is broken


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Distribution:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Distribution:
    """The sdist, and the wheel `python -m build` makes from it (so the sdist must be complete), once a session."""
    source = tmp_path_factory.mktemp("source")
    for name in DISTRIBUTION_FILES:
        shutil.copy2(BASE_DIR / name, source / name)
    shutil.copytree(BASE_DIR / "daemons", source / "daemons", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, source)
    (sdist,) = out.glob("django_daemon_kit-*.tar.gz")
    (built,) = out.glob("django_daemon_kit-*-py3-none-any.whl")
    return Distribution(sdist, built)


@pytest.fixture(scope="session")
def wheel(distribution: Distribution) -> Path:
    return distribution.wheel

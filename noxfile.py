"""The framework's own tests on every supported Django and Python, against the built wheel: `make test-matrix`.

Each session makes a fresh venv on one Python, installs the wheel (never this checkout) with one Django line
and the test tools, and runs the framework's tests from a copy of tests/ that has no daemons/ beside it, so
`import daemons` can only find the wheel. The copy runs with TEST_FRAMEWORK_ONLY set: tests/settings.py then
builds on tests/framework_settings.py, a project without the showcase (which the wheel doesn't carry).

The Makefile puts pyenv's interpreters on PATH; `nox -l` lists the sessions, `nox -s "framework(3.12-django6.1)"`
runs one.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

# (Python, Django) pairs: Django 5.2 LTS on 3.11 to 3.13; Django 6.0 and 6.1 need Python 3.12 or newer.
# pyproject.toml's classifiers and Django range say the same (tests/test_package.py compares them).
MATRIX = [
    ("3.11", "5.2"), ("3.12", "5.2"), ("3.13", "5.2"),
    ("3.12", "6.0"), ("3.13", "6.0"),
    ("3.12", "6.1"), ("3.13", "6.1"),
]

# The framework's tests: those that need neither the showcase (customers, signup_site: its daemons, its
# settings) nor the repository around them (its Makefile, docs, deploy/ examples, benchmarks).
FRAMEWORK_TESTS = ["tests/daemons"]
SHOWCASE_TESTS = [
    "tests/daemons/cluster/test_cluster_status.py",
    "tests/daemons/cluster/test_cluster_wakeup.py",
    "tests/daemons/process/test_watchdog_onboarding.py",
    "tests/daemons/console/test_makedaemon.py",
    "tests/daemons/test_registry.py",
]
SHOWCASE_CASES = [
    "tests/daemons/console/test_status.py::test_json_gives_each_scheduled_jobs_last_run_and_next_run_as_data",
    "tests/daemons/console/test_dashboard.py::test_run_now_records_a_request",
    "tests/daemons/cluster/test_control.py::test_run_now_runs_a_scheduled_job_at_once",
    "tests/daemons/process/test_process.py::test_unknown_daemon_lists_registered_ones",
    "tests/daemons/process/test_outage.py::test_postgresql_stopped_and_started_is_an_outage_the_daemon_survives",
    "tests/daemons/console/test_deployment.py::test_the_examples_in_deploy_are_what_daemonconfig_prints",
    "tests/daemons/console/test_deployment.py::test_systemd_unit_is_type_notify_and_runs_the_venv_python_in_the_foreground",
    "tests/daemons/console/test_deployment.py::test_systemd_unit_passes_systemd_analyze_verify",
    "tests/daemons/test_checks.py::test_the_adopting_guide_lists_every_setting_with_its_default_and_meaning",
    "tests/daemons/process/test_supervisor.py::test_a_child_killed_during_a_database_outage_comes_back_with_the_database",
]
# Tests that run the session's interpreter as the user nobody. pyenv's interpreters live under /root, which
# nobody may not enter; where the interpreter also needs its libpython from there (3.12 and 3.13 here), they
# can't start, and the session says it leaves these cases out.
AS_NOBODY_CASES = [
    "tests/daemons/console/test_stopping.py::test_another_user_sees_roots_daemon_running_and_is_told_it_may_not_stop_it",
    "tests/daemons/console/test_stopping.py::test_a_daemon_that_dropped_privileges_is_stopped_by_its_own_user",
    "tests/daemons/console/test_stopping.py::test_a_locked_file_still_naming_a_reused_pid_is_not_trusted_by_another_user",
    "tests/daemons/process/test_unwritable_dirs.py",
]
# What the copy leaves out of tests/: the showcase's tests and fixtures.
SHOWCASE_DIRS = ["customers", "browser"]
# The copy's neighbours: manage.py for the tests' daemon processes, pyproject.toml for pytest's configuration.
SUPPORT = ["manage.py", "pyproject.toml"]
# The test tools, with the bounds requirements-dev.txt and requirements.txt give them.
TOOLS = {"pytest", "pytest-django", "pytest-timeout", "pytest-xdist", "supervisor", "psycopg"}

nox.options.sessions = ["framework"]
nox.options.error_on_missing_interpreters = True


@functools.cache
def built_wheel() -> Path:
    """The wheel, built once per nox run with `python -m build` (sdist first, the wheel from it)."""
    out = ROOT / ".nox" / "dist"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True,
                   stdout=subprocess.DEVNULL)
    (wheel,) = out.glob("django_daemon_kit-*-py3-none-any.whl")
    return wheel


def tool_requirements() -> list[str]:
    """TOOLS as requirements-dev.txt and requirements.txt pin them (one place for every bound)."""
    lines = [line.strip() for name in ("requirements-dev.txt", "requirements.txt")
             for line in (ROOT / name).read_text().splitlines()]
    found = [line for line in lines
             if (match := re.match(r"[A-Za-z0-9_.-]+", line)) and match.group(0).lower() in TOOLS]
    assert len(found) == len(TOOLS), f"not every test tool is in the requirements files: {found}"
    return found


def copy_suite(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT / "tests", target / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *SHOWCASE_DIRS))
    for name in SUPPORT:
        shutil.copy2(ROOT / name, target / name)
    for name in SHOWCASE_TESTS:
        (target / name).unlink()


def nobody_can_run(session: nox.Session) -> bool:
    if os.getuid() != 0:
        return True  # the tests skip what they can't do as another user
    probe = [shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             str(Path(session.bin) / "python"), "-c", "pass"]
    return subprocess.run(probe, capture_output=True, cwd="/").returncode == 0


@nox.session
@nox.parametrize(("python", "django"), MATRIX, ids=[f"{python}-django{django}" for python, django in MATRIX])
def framework(session: nox.Session, django: str) -> None:
    session.install(f"{built_wheel()}[sentry]", f"Django~={django}.0", *tool_requirements())
    suite = Path(session.create_tmp()) / "suite"
    copy_suite(suite)
    session.chdir(suite)
    session.run("python", "-c", "import daemons, django, sys; print('daemons from', daemons.__file__); "
                f"assert 'site-packages' in daemons.__file__; assert django.get_version().startswith('{django}.')")
    left_out = list(SHOWCASE_CASES)
    if not nobody_can_run(session):
        session.warn(f"nobody can't start this interpreter: leaving out {len(AS_NOBODY_CASES)} tests that need that")
        left_out += AS_NOBODY_CASES
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", "--dist", "worksteal",
                *FRAMEWORK_TESTS, *(f"--deselect={case}" for case in left_out), *session.posargs,
                env={"TEST_FRAMEWORK_ONLY": "1"})

"""The framework as a product: its wheel installed into a fresh `startproject` project, with no settings of its own.

The sdist and wheel are built from a copy of what the distribution needs (DISTRIBUTION_FILES and daemons/),
installed WITHOUT the [sentry] extra into a new venv (dependencies resolved by pip, from its cache),
and a new project with its own LOGGING runs every command a newcomer would.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import wait_for
from tests.distribution import TIMEOUT, Distribution, run

# A test (with its fixtures) runs up to three pip/build commands back to back; the default timeout would cut them.
pytestmark = [pytest.mark.process, pytest.mark.timeout(3 * TIMEOUT + 120)]

# What the app needs at run time besides its modules.
RUN_TIME_FILES = ("daemons/py.typed", "daemons/static/daemons/dashboard.css",
                  "daemons/templates/daemons/dashboard.html", "daemons/migrations/0001_initial.py",
                  "daemons/management/commands/rundaemon.py",
                  "daemons/templates/daemons/makedaemon/daemon_every.py-tpl")


def test_the_wheel_holds_the_framework_alone(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {entry for entry in top if not entry.endswith(".dist-info")} == {"daemons"}
    for needed in RUN_TIME_FILES:
        assert needed in names
    dist_info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
    assert f"{dist_info}/licenses/LICENSE" in names
    assert "MIT License" in zipfile.ZipFile(wheel).read(f"{dist_info}/licenses/LICENSE").decode()
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "Name: django-daemon-kit" in metadata
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    assert all("<" in requirement for requirement in requires), requires  # every dependency has an upper bound
    assert [r for r in requires if r.startswith("sentry-sdk")] == ['sentry-sdk<3,>=2.0; extra == "sentry"']


def test_the_metadata_names_every_supported_django_and_python(wheel: Path) -> None:
    """Django 5.2 LTS, 6.0 and 6.1 on Python 3.11 to 3.13: what noxfile.py's matrix runs."""
    import noxfile

    names = zipfile.ZipFile(wheel).namelist()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    classifiers = set(re.findall(r"^Classifier: (.+)$", metadata, re.MULTILINE))
    djangos = {django for _, django in noxfile.MATRIX}
    pythons = {python for python, _ in noxfile.MATRIX}
    assert {c for c in classifiers if c.startswith("Framework :: Django ::")} == {
        f"Framework :: Django :: {django}" for django in djangos}
    assert {c for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)} == {
        f"Programming Language :: Python :: {python}" for python in pythons}
    (django_requirement,) = re.findall(r"^Requires-Dist: (Django\b.*)$", metadata, re.MULTILINE)
    specifier = Requirement(django_requirement).specifier
    for django in djangos:
        assert specifier.contains(f"{django}.0") and specifier.contains(f"{django}.99"), django_requirement
    major, minor = _version(max(djangos, key=_version))
    assert not specifier.contains("5.1.99") and not specifier.contains(f"{major}.{minor + 1}.0"), django_requirement


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_long_description_is_written_for_adopters(wheel: Path) -> None:
    """The package README: how to install and add the app; nothing of the showcase, no link that PyPI can't follow."""
    names = zipfile.ZipFile(wheel).namelist()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    description = metadata.split("\n\n", 1)[1]
    assert "Content-Type: text/markdown" in metadata
    for promised in ('"daemons"', 'include("daemons.urls")', "makedaemon", "rundaemon", "daemons.wake("):
        assert promised in description, promised
    for showcase in ("make run", "signup", "customers", "onboarding"):
        assert showcase not in description, showcase
    links = re.findall(r"\]\(([^)]+)\)", description)
    assert all(link.startswith("https://") for link in links), links


def test_the_sdist_holds_what_the_wheel_is_built_from(distribution: Distribution) -> None:
    with tarfile.open(distribution.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"LICENSE", "pyproject.toml", "daemons/README.md", *RUN_TIME_FILES} <= names
    assert not {name for name in names if name.startswith(("tests/", "customers/", "signup_site/"))}
    assert "README.md" not in names  # the showcase's README


@pytest.fixture
def new_project(wheel: Path, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh venv with the wheel (no sentry-sdk) and a `startproject` project using it; nothing left running."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # The test's own pip drives the new venv: saves ensurepip's seconds; dependencies still resolve normally.
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "DAEMONS_", "PYTEST", "SENTRY_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    missing = run(python, "-c", "import importlib.util as u; print(u.find_spec('sentry_sdk') is None)", env=env)
    assert missing.stdout.strip() == "True", "sentry-sdk must not come with the wheel"
    run(venv / "bin" / "django-admin", "startproject", "mysite", tmp_path, env=env)
    run(python, "manage.py", "startapp", "shop", cwd=tmp_path, env=env)
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '''
INSTALLED_APPS += ["daemons", "shop"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"shop_file": {"class": "logging.FileHandler", "filename": BASE_DIR / "shop.log"}},
    "loggers": {"shop": {"handlers": ["shop_file"], "level": "INFO"}},
}
''')
    try:
        yield tmp_path, env
    finally:
        pid_file = tmp_path / "var" / "run" / "hello.pid"
        pid = pid_file.read_text().strip() if pid_file.exists() else ""
        if pid.isdigit():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_new_project_runs_every_command_with_no_framework_settings(new_project) -> None:
    project, env = new_project
    python = str(project / "venv" / "bin" / "python")

    def manage(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(python, "manage.py", *args, cwd=project, env=env, check=check)

    made = manage("makedaemon", "hello", "--app", "shop", "--every", "1s")
    assert "shop/daemons.py" in made.stdout
    # The business logic a user writes: a line to the project's own logger, and a failure on demand.
    daemons_py = project / "shop" / "daemons.py"
    code = daemons_py.read_text().replace(
        "        processed = 0  #",
        '        if os.environ.get("SHOP_FAIL"):\n'
        '            raise RuntimeError("shop tick failed on purpose")\n'
        '        logging.getLogger("shop.work").info("hello from the daemon", extra={"action": "hello"})\n'
        "        processed = 1  #",
    )
    daemons_py.write_text("import logging\nimport os\n" + code if "__future__" not in code
                          else code.replace("annotations\n", "annotations\n\nimport logging\nimport os\n", 1))
    manage("migrate", "--no-input")
    assert "System check identified no issues" in manage("check").stdout

    once = manage("rundaemon", "hello", "--once")
    shop_log = project / "shop.log"
    assert shop_log.read_text().count("hello from the daemon") == 1, once.stderr
    assert "hello from the daemon" in once.stderr and "action=hello" in once.stderr  # the daemon's stderr handler

    crash = run(python, "manage.py", "rundaemon", "hello", "--once", cwd=project, env={**env, "SHOP_FAIL": "1"},
                check=False)
    assert "shop tick failed on purpose" in crash.stderr
    assert "sentry" not in crash.stderr.lower(), crash.stderr  # nothing tried to import or report to Sentry

    started = manage("rundaemon", "hello", "--detach")
    printed = re.search(r"pid (\d+)", started.stdout)
    assert printed, started.stdout
    pid = int(printed.group(1))
    daemon_log = project / "var" / "log" / "hello.log"
    wait_for(lambda: shop_log.read_text().count("hello from the daemon") >= 2, timeout=60,
             message=f"the detached daemon's line in the project's own log; daemon log: "
                     f"{daemon_log.read_text() if daemon_log.exists() else '(none)'}")
    wait_for(lambda: "hello from the daemon" in daemon_log.read_text(), timeout=60, message="the daemon log's line")
    status = manage("daemonstatus", "hello", check=False)
    assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr
    stopped = manage("stopdaemon", "hello")
    assert "stopped" in stopped.stdout, stopped.stdout
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
             timeout=30, message="the daemon to exit")
    assert manage("daemonstatus", "hello", check=False).returncode == 3


@pytest.mark.parametrize("dsn", [False, True])
def test_sentry_is_imported_only_when_a_dsn_is_set(project, sentry_sink, dsn: bool) -> None:
    """sentry-sdk costs memory: a daemon whose tick fails imports it only when SENTRY_DSN is set."""
    env = {"PYTHONPROFILEIMPORTTIME": "1", "SENTRY_DSN": sentry_sink.dsn if dsn else ""}
    result = project.manage("rundaemon", "failing", "--once", env=env)
    assert "the failing daemon failed on purpose" in result.stderr, result.stderr[-2000:]
    imported = re.search(r"\|\s+sentry_sdk$", result.stderr, re.MULTILINE) is not None
    assert imported is dsn

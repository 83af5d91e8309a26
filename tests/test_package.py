"""The framework as a product: its wheel installed into a fresh `startproject` project, with no settings of its own.

The wheel is built from a copy of what the distribution needs (pyproject.toml, README.md, daemons/),
installed WITHOUT the [sentry] extra into a new venv (dependencies resolved by pip, from its cache),
and a new project with its own LOGGING runs every command a newcomer would.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, wait_for

TIMEOUT = 300  # pip and builds are slow on a loaded machine; this only costs time when something is broken
# A test (with its fixtures) runs up to three of those commands back to back: the wheel's build, the venv, the
# install. The suite's default of 120 s would cut them short.
pytestmark = [pytest.mark.process, pytest.mark.timeout(3 * TIMEOUT + 120)]


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The django-daemon-kit wheel, built once per session with `python -m build`."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(BASE_DIR / name, source / name)
    shutil.copytree(BASE_DIR / "daemons", source / "daemons", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--wheel", "--outdir", out, source)
    (built,) = out.glob("django_daemon_kit-*-py3-none-any.whl")
    return built


def test_the_wheel_holds_the_framework_alone(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {entry for entry in top if not entry.endswith(".dist-info")} == {"daemons"}
    for needed in ("daemons/py.typed", "daemons/migrations/0001_initial.py",
                   "daemons/management/commands/rundaemon.py",
                   "daemons/templates/daemons/makedaemon/daemon_every.py-tpl"):
        assert needed in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: django-daemon-kit" in metadata
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    assert all("<" in requirement for requirement in requires), requires  # every dependency has an upper bound
    assert [r for r in requires if r.startswith("sentry-sdk")] == ['sentry-sdk<3,>=2.0; extra == "sentry"']


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

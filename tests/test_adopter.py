"""docs/adopting.md, followed literally by a newcomer: the built wheel in a fresh `startproject` project.

A fresh venv gets the wheel (never an editable install) and a supported Django, then a new project and app
go through every step the guide and the package README promise, with startproject's settings as they are
(no LOGGING, no DAEMONS_* setting).

`make test` runs it with this suite's Python and Django 5.2; `make test-adopter ADOPTER_PY=3.12
ADOPTER_DJANGO=6.1` (which `.ci/run` calls) picks another interpreter and Django line through the
ADOPTER_PY and ADOPTER_DJANGO variables.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import default_signals, wait_for
from tests.distribution import run

pytestmark = pytest.mark.process

DEFAULT_DJANGO = "5.2"
SHOP_LINE = "shop.work says hello"

WORK_DAEMON = f'''

# Written by hand, as a reader of docs/adopting.md would: the app's own logger, no LOGGING setting.
import logging as _logging

from daemons import Daemon as _Daemon
from daemons import TickResult as _TickResult
from daemons import register as _register


@_register
class WorkDaemon(_Daemon):
    name = "work"
    interval = 0.5

    def tick(self, now):
        _logging.getLogger("shop.work").info("{SHOP_LINE}")
        return _TickResult(processed=1, summary="worked")
'''

# A client as a staff member's browser: the dashboard, then the stylesheet it links to.
DASHBOARD_PROBE = '''
import re
from django.contrib.auth import get_user_model
from django.test import Client
user = get_user_model().objects.create_user("staff", password="not-used", is_staff=True)
client = Client()
client.force_login(user)
response = client.get("/admin/daemons/dashboard/")
print("status", response.status_code)
for href in re.findall(r'<link[^>]+href="([^"]+[.]css)"', response.content.decode()):
    print("css", href)
'''

PRODUCTION_SETTINGS = '''
from .settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
'''


def adopter_python() -> str:
    """The interpreter the new project runs on: ADOPTER_PY (e.g. "3.12"), or the suite's own."""
    version = os.environ.get("ADOPTER_PY")
    if not version:
        return sys.executable
    found = shutil.which(f"python{version}")
    if found is None or subprocess.run([found, "--version"], capture_output=True, timeout=30).returncode != 0:
        pytest.fail(f"ADOPTER_PY={version}: no working python{version} on PATH (the Makefile adds pyenv's)")
    return found


@dataclass
class Adopter:
    """A new project on the built wheel: its directory, its venv's interpreter and a clean environment."""

    root: Path
    python: Path
    env: dict[str, str]

    def manage(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
        return run(self.python, "manage.py", *args, cwd=self.root, env={**self.env, **(env or {})}, check=check)

    def pids(self) -> list[int]:
        run_dir = self.root / "var" / "run"
        found = (path.read_text().strip() for path in run_dir.glob("*.pid")) if run_dir.exists() else ()
        return [int(pid) for pid in found if pid.isdigit()]


@pytest.fixture
def adopter(wheel: Path, tmp_path: Path) -> Iterator[Adopter]:
    """docs/adopting.md §1-2: a venv with the wheel and Django, startproject, startapp, the app and urls added."""
    django = os.environ.get("ADOPTER_DJANGO", DEFAULT_DJANGO)
    venv = tmp_path / "venv"
    run(adopter_python(), "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # The suite's pip drives the new venv (saves ensurepip's seconds); dependencies come from the index or its cache.
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, f"Django~={django}.0")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "DAEMONS_", "PYTEST", "SENTRY_", "PYTHON", "VIRTUAL_ENV", "ADOPTER_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    installed = run(python, "-c", "import django, sys; print(django.get_version(), sys.version_info[:2])", env=env)
    assert installed.stdout.startswith(f"{django}."), installed.stdout
    root = tmp_path / "mysite"
    root.mkdir()
    run(venv / "bin" / "django-admin", "startproject", "mysite", root, env=env)
    project = Adopter(root, python, env)
    project.manage("startapp", "shop")
    settings = root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nINSTALLED_APPS += ["daemons", "shop"]\n')
    urls = root / "mysite" / "urls.py"
    source = urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
    urls.write_text(source.replace("path('admin/', admin.site.urls),", "path('admin/', admin.site.urls),\n"
                                   "    path('daemons/', include('daemons.urls')),")
                    .replace('path("admin/", admin.site.urls),', 'path("admin/", admin.site.urls),\n'
                             '    path("daemons/", include("daemons.urls")),'))
    assert "include(" in urls.read_text().split("urlpatterns", 1)[1], urls.read_text()
    try:
        yield project
    finally:
        # Whatever the test left running: only a process that still holds its PID file's lock is stopped.
        from daemons.console.stopping import stop

        for pid_path in (root / "var" / "run").glob("*.pid"):
            stop(pid_path, timeout=10, kill=True)


def daemon_state(project: Adopter, *names: str) -> int:
    return project.manage("daemonstatus", *names, check=False).returncode


@pytest.mark.timeout(900)
def test_the_adopting_guide_works_on_the_built_wheel(adopter: Adopter) -> None:
    project = adopter
    python = run(project.python, "-c", "import sys; print(sys.executable)", env=project.env).stdout.strip()
    imported = run(project.python, "-c", "import daemons; print(daemons.__file__)", cwd=project.root, env=project.env)
    assert "site-packages" in imported.stdout, f"the kit must come from the installed wheel: {imported.stdout}"

    project.manage("migrate", "--no-input")
    assert "System check identified no issues" in project.manage("check").stdout

    # §3: makedaemon in a fresh app (startapp's tests.py beside it); both test runners pass.
    project.manage("makedaemon", "hello", "--app", "shop", "--every", "30s")
    django_tests = project.manage("test", "shop", "--no-input", check=False)
    assert django_tests.returncode == 0, django_tests.stdout + django_tests.stderr
    assert re.search(r"^Ran [1-9]\d* tests?", django_tests.stderr, re.MULTILINE), django_tests.stderr
    run(sys.executable, "-m", "pip", "--python", project.python, "install", "--quiet", "pytest-django")
    pytest_run = run(project.python, "-m", "pytest", "-p", "no:cacheprovider", "--ds=mysite.settings", "shop",
                     cwd=project.root, env=project.env, check=False)
    assert pytest_run.returncode == 0, pytest_run.stdout + pytest_run.stderr
    assert re.search(r"\b[1-9]\d* passed", pytest_run.stdout), pytest_run.stdout

    # §5: the app's own log lines reach the daemon's output and log, with startproject's settings as they are.
    daemons_py = project.root / "shop" / "daemons.py"
    daemons_py.write_text(daemons_py.read_text() + WORK_DAEMON)
    once = project.manage("rundaemon", "work", "--once")
    assert SHOP_LINE in once.stdout + once.stderr, once.stdout + once.stderr

    # §4: detached, status, stop.
    started = project.manage("rundaemon", "work", "--detach")
    pid = int(re.findall(r"pid (\d+)", started.stdout)[0])
    log = project.root / "var" / "log" / "work.log"
    wait_for(lambda: log.exists() and SHOP_LINE in log.read_text(), timeout=60,
             message=f"{SHOP_LINE!r} in the detached daemon's log")
    status = project.manage("daemonstatus", "work", check=False)
    assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr
    assert "stopped" in project.manage("stopdaemon", "work").stdout
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, message="the detached daemon to exit")
    assert daemon_state(project, "work") == 3

    # Every daemon of the project under one supervisor.
    project.manage("rundaemon", "--all", "--detach")
    wait_for(lambda: daemon_state(project, "hello", "work") == 0, timeout=60,
             message="hello and work running under the supervisor")
    project.manage("stopdaemon", "--all")
    wait_for(lambda: daemon_state(project, "hello", "work") == 3, timeout=60, message="every daemon stopped")

    # Production static files: collectstatic with hashed names, DEBUG off; the dashboard and its stylesheet.
    (project.root / "mysite" / "production.py").write_text(PRODUCTION_SETTINGS)
    production = {"DJANGO_SETTINGS_MODULE": "mysite.production"}
    project.manage("collectstatic", "--no-input", env=production)
    probe = project.manage("shell", "-c", DASHBOARD_PROBE, env=production, check=False)
    assert probe.returncode == 0 and "status 200" in probe.stdout, probe.stdout + probe.stderr[-3000:]
    stylesheet = re.search(r"^css /static/(daemons/dashboard\.[0-9a-f]{12}\.css)$", probe.stdout, re.MULTILINE)
    assert stylesheet, probe.stdout
    served = project.root / "staticfiles" / stylesheet.group(1)
    assert served.is_file() and served.read_text().strip(), f"{served} is missing or empty"

    # §6: the generated service files name the interpreter that ran daemonconfig.
    unit = project.manage("daemonconfig", "work", "--systemd").stdout
    assert re.search(rf"^ExecStart={re.escape(python)} ", unit, re.MULTILINE), unit
    program = project.manage("daemonconfig", "work", "--supervisor").stdout
    assert re.search(rf"^command={re.escape(python)} ", program, re.MULTILINE), program
    supervisord_runs(project, program)


def supervisord_runs(project: Adopter, program: str) -> None:
    """supervisord (the suite's own) starts, stops and restarts the generated program."""
    if os.getuid() != 0:  # supervisord can switch users only when it runs as root
        program = "\n".join(line for line in program.splitlines() if not line.startswith("user="))
    conf = project.root / "supervisord.conf"
    sock = project.root / "supervisor.sock"
    conf.write_text(f"""\
[unix_http_server]
file={sock}

[supervisord]
nodaemon=true
logfile={project.root}/supervisord.log
pidfile={project.root}/supervisord.pid
childlogdir={project.root}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}

{program}
""")
    bin_dir = Path(sys.executable).parent
    ctl = [str(bin_dir / "supervisorctl"), "-c", str(conf)]
    supervisord = subprocess.Popen([str(bin_dir / "supervisord"), "-c", str(conf)], env=project.env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=default_signals)

    def supervisorctl(*args: str) -> str:
        result = run(*ctl, *args, check=False)
        return result.stdout + result.stderr

    try:
        wait_for(lambda: daemon_state(project, "work") == 0 or supervisord.poll() is not None, timeout=60,
                 message="supervisord to start the program")
        log = project.root / "supervisord.log"
        assert supervisord.poll() is None, log.read_text() if log.exists() else "(no supervisord log)"
        first = project.pids()
        assert "work: stopped" in supervisorctl("stop", "work")
        assert daemon_state(project, "work") == 3
        assert "work: started" in supervisorctl("start", "work")
        wait_for(lambda: daemon_state(project, "work") == 0, timeout=60, message="the program started again")
        restarted = supervisorctl("restart", "work")
        assert "work: stopped" in restarted and "work: started" in restarted, restarted
        wait_for(lambda: daemon_state(project, "work") == 0, timeout=60, message="the program restarted")
        assert project.pids() != first
    finally:
        supervisorctl("shutdown")
        try:
            supervisord.wait(timeout=30)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait()

"""makedaemon: generate, test, run and list a new daemon in a copy of the project."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from daemons.console.generator import GeneratorError, daemon_plan
from tests.project_copy import copy_project

pytestmark = pytest.mark.process


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": "onboarding"}, "daemon name 'onboarding' is taken by customers.daemons.OnboardingDaemon"),
     ({"name": "bad-name"}, "invalid daemon name 'bad-name': use a Python identifier"),
     ({"name": "class"}, "invalid daemon name 'class'"),
     ({"name": "fresh", "app_label": "nope"}, "unknown app 'nope'; project apps: customers"),
     ({"name": "fresh", "app_label": "auth"}, "app 'auth' is not part of this project"),
     ({"name": "counter_two", "app_label": "testapp"}, None)],
)
def test_refusals_are_one_clear_line(kwargs, message) -> None:
    # daemon_plan writes nothing, so these run against the real project safely.
    base_dir = Path(settings.BASE_DIR)
    if message is None:
        plan = daemon_plan(base_dir=base_dir, **kwargs)
        assert plan.class_name == "CounterTwoDaemon"
        assert plan.test_file == base_dir / "tests" / "testapp" / "test_counter_two_daemon.py"
        assert not plan.test_file.exists()
        return
    with pytest.raises(GeneratorError, match=message) as info:
        daemon_plan(base_dir=base_dir, **kwargs)
    assert "\n" not in str(info.value)


def test_generate_then_test_then_run_then_status(tmp_path) -> None:
    proj = copy_project(tmp_path / "project")
    made = proj.manage("makedaemon", "reports", "--app", "customers", "--every", "30s")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[:2] == ["Added ReportsDaemon in customers/daemons.py",
                                            "Wrote tests/customers/test_reports_daemon.py"]
    source = (proj.root / "customers" / "daemons.py").read_text()
    assert 'name = "reports"' in source and "interval = 30.0" in source and "business logic" in source
    cron = proj.manage("makedaemon", "nightly_check", "--cron", "*/5 * * * *")
    assert cron.returncode == 0, cron.stderr

    again = proj.manage("makedaemon", "reports")
    assert again.returncode == 1
    assert again.stderr.strip() == "CommandError: daemon name 'reports' is taken by customers.daemons.ReportsDaemon"
    (proj.root / "tests" / "customers" / "test_other_daemon.py").write_text("# someone's test\n")
    clash = proj.manage("makedaemon", "other")
    assert clash.returncode == 1 and "test_other_daemon.py exists; not overwriting it" in clash.stderr
    assert "OtherDaemon" not in (proj.root / "customers" / "daemons.py").read_text()
    bad = proj.manage("makedaemon", "x", "--cron", "61 * * * *")
    assert bad.returncode == 2 and "invalid cron expression '61 * * * *'" in bad.stderr

    tests = proj.run(proj.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "tests/customers/test_reports_daemon.py", "tests/customers/test_nightly_check_daemon.py",
                     timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    assert proj.manage("migrate", "--no-input").returncode == 0
    once = proj.manage("rundaemon", "reports", "--once")
    assert once.returncode == 0, once.stderr
    assert "started" in once.stderr
    status = proj.manage("daemonstatus")
    names = [line.split()[0] for line in status.stdout.splitlines()[1:]]
    assert {"reports", "nightly_check", "onboarding", "digest"} <= set(names)
    [line] = [line for line in status.stdout.splitlines() if line.startswith("reports ")]
    assert "stopped" in line and line.rstrip().endswith("ready")


def startproject_with_an_app(root: Path) -> Path:
    """`django-admin startproject mysite` and `startapp shop` (with its tests.py), the kit and the app installed."""
    root.mkdir()
    for args in (["startproject", "mysite", "."], ["startapp", "shop"]):
        made = subprocess.run([sys.executable, "-m", "django", *args], cwd=root, capture_output=True, text=True,
                              timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")})
        assert made.returncode == 0, made.stderr
    settings_py = root / "mysite" / "settings.py"
    settings_py.write_text(settings_py.read_text().replace(
        "INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "daemons",\n    "shop",', 1))
    assert (root / "shop" / "tests.py").exists()
    return root


def run_in(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "DATABASE_URL"))}
    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=180, env=env,
                          stdin=subprocess.DEVNULL)


def test_in_a_startapp_app_the_test_sits_beside_tests_py_and_passes_under_both_runners(tmp_path) -> None:
    root = startproject_with_an_app(tmp_path / "mysite")
    for args in (["hello", "--every", "30s"], ["nightly", "--cron", "0 3 * * *"]):
        made = run_in(root, "manage.py", "makedaemon", *args, "--app", "shop")
        assert made.returncode == 0, made.stderr
    assert not (root / "shop" / "tests").exists()  # a package there would hide tests.py: an ImportError
    assert (root / "shop" / "test_hello_daemon.py").exists() and (root / "shop" / "test_nightly_daemon.py").exists()
    assert "manage.py test shop" in made.stdout

    django_runner = run_in(root, "manage.py", "test", "--noinput")
    assert django_runner.returncode == 0, django_runner.stdout + django_runner.stderr
    assert "Ran 2 tests" in django_runner.stderr

    pytest_runner = run_in(root, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_django",
                           "--ds", "mysite.settings", "shop")
    assert pytest_runner.returncode == 0, pytest_runner.stdout + pytest_runner.stderr
    assert "2 passed" in pytest_runner.stdout


def test_an_app_with_a_tests_package_gets_the_test_inside_it(tmp_path) -> None:
    root = startproject_with_an_app(tmp_path / "mysite")
    (root / "shop" / "tests.py").unlink()
    (root / "shop" / "tests").mkdir()
    (root / "shop" / "tests" / "__init__.py").write_text("")
    made = run_in(root, "manage.py", "makedaemon", "hello", "--app", "shop")
    assert made.returncode == 0, made.stderr
    assert (root / "shop" / "tests" / "test_hello_daemon.py").exists()
    django_runner = run_in(root, "manage.py", "test", "--noinput", "shop")
    assert django_runner.returncode == 0 and "Ran 1 test" in django_runner.stderr, django_runner.stderr

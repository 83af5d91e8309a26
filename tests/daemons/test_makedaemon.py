"""makedaemon: generate, test, run and list a new daemon in a copy of the project."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from daemons.generator import GeneratorError, daemon_plan
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

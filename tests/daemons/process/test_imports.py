"""What a daemon process imports: what it uses, not the web process's code nor the operator's other verbs.

A module a daemon imports stays in its memory for its whole life, so these run the real
`manage.py rundaemon` start path in a subprocess and read its `sys.modules` when it stops.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from django.conf import settings

from daemons.models import Heartbeat
from tests.conftest import BASE_DIR, Project, default_signals, wait_for

pytestmark = pytest.mark.process

# manage.py, plus one line of JSON on stdout at exit: the names in sys.modules.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), flush=True))
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", *sys.argv[1:]])
"""

# What only the web process or another command uses, each with what used to import it into a daemon.
NOT_IN_A_DAEMON = {
    "django.core.management.commands.migrate": "Django's commands check (migrate's autodetector)",
    "django.db.migrations.autodetector": "Django's commands check",
    "django.contrib.admin.templatetags.admin_list": "Django's template checks (every tag library)",
    "django.contrib.sessions.middleware": "django.contrib.auth's middleware check",
    "daemons.urls": "Django's URL checks",
    "daemons.console.operations": "rundaemon's module (the verbs to detach and to supervise)",
    "daemons.console.stopping": "rundaemon's module",
}


def daemon_modules(project: Project, name: str) -> set[str]:
    """The modules of a real foreground `rundaemon NAME`, read once it stopped on SIGTERM."""
    process = subprocess.Popen([sys.executable, "-c", PROBE, "rundaemon", name], cwd=BASE_DIR, env=project.env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_signals)
    project.processes.append(process)
    # After a tick: by then the daemon has imported all it needs to run.
    wait_for(lambda: Heartbeat.objects.filter(name=name, pid=process.pid, last_tick_at__isnull=False).exists(),
             timeout=60, message=f"{name} ticking")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    modules: set[str] = set(json.loads(out.strip().splitlines()[-1]))
    return modules


def test_a_daemon_imports_neither_the_web_process_nor_the_other_verbs(project: Project) -> None:
    modules = daemon_modules(project, "counter")
    assert {"daemons.process.runner", "daemons.process.watch", "tests.testapp.daemons"} <= modules  # the probe works
    assert settings.ROOT_URLCONF not in modules, "Django's URL checks import the URLconf, every view and form"
    imported = {module: why for module, why in NOT_IN_A_DAEMON.items() if module in modules}
    assert not imported, imported

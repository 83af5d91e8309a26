"""`make run`: the site and every showcase daemon (under one supervisor) start together, and Ctrl-C stops all."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from daemons import pidfile
from daemons.stopping import stop
from tests.conftest import default_signals, process_env, wait_for
from tests.daemons.test_process import alive

pytestmark = pytest.mark.process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.status
    except OSError:
        return None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_make_run(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """`make run` on a free port, in a process group of its own (a terminal's foreground job), serving.

    The port is known free only when runserver binds it: another process may take it first, then we retry.
    """
    for _ in range(3):
        port = free_port()
        make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=settings.BASE_DIR, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                process_group=0, preexec_fn=default_signals)
        wait_for(lambda port=port, make=make: page(port) == 200 or make.poll() is not None,
                 timeout=60, message="the site on its port")
        if make.poll() is None:
            return make, port
        output = make.communicate()[0]
        if "port is already in use" not in output:
            pytest.fail(f"make run exited with {make.returncode}:\n{output}")
    pytest.fail("make run found no free port in 3 tries")


def stop_leftovers(make: subprocess.Popen, pid_path: Path) -> None:
    """Whatever make run left (its process group, the detached daemon) is killed: a failed test leaves nothing."""
    if group_alive(make.pid):
        os.killpg(make.pid, signal.SIGKILL)
    if make.poll() is None:
        make.kill()
        make.communicate()
    for path in pid_path.parent.glob("*.pid"):
        stop(path, timeout=5, kill=True)


def test_make_run_twice_and_ctrl_c_leaves_nothing_behind(tmp_path, transactional_db) -> None:
    env = process_env(tmp_path)
    env.pop("TESTAPP_INTERVAL")
    env["DJANGO_SETTINGS_MODULE"] = "signup_site.settings"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    run_dir = tmp_path / "run"
    pid_path = run_dir / "onboarding.pid"
    for _ in range(2):
        make, port = start_make_run(env)
        try:
            daemon_pid = pidfile.read_holder(pid_path)
            assert daemon_pid, "the onboarding daemon is not running"
            others = {path.name: pidfile.read_holder(path) for path in run_dir.glob("*.pid")}
            assert {"supervisor.pid", "onboarding.pid", "digest.pid"} <= set(others), others
            status = subprocess.run([sys.executable, "manage.py", "daemonstatus"],
                                    cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
            assert status.returncode == 0, status.stdout + status.stderr
            # Ctrl-C in a terminal signals the whole foreground process group.
            os.killpg(make.pid, signal.SIGINT)
            output, _ = make.communicate(timeout=60)
            assert "supervisor stopped" in output, output
            assert not list(run_dir.glob("*.pid")), output
            assert page(port) is None
            assert not any(alive(pid) for pid in others.values() if pid), "a daemon outlived make run"
            wait_for(lambda make=make: not group_alive(make.pid), timeout=10, message="make run's processes to exit")
        finally:
            stop_leftovers(make, pid_path)

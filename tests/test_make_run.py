"""`make run`: the site and the onboarding daemon start together, and Ctrl-C stops both."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request

import pytest
from django.conf import settings

from daemons import pidfile
from tests.conftest import process_env, wait_for
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


def test_make_run_twice_and_ctrl_c_leaves_nothing_behind(tmp_path, transactional_db) -> None:
    env = process_env(tmp_path)
    env.pop("TESTAPP_INTERVAL")
    env["DJANGO_SETTINGS_MODULE"] = "signup_site.settings"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    pid_path = tmp_path / "run" / "onboarding.pid"
    for _ in range(2):
        port = free_port()
        make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=settings.BASE_DIR, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            wait_for(lambda: page(port) == 200, timeout=60, message="the site on its port")
            daemon_pid = pidfile.read_holder(pid_path)
            assert daemon_pid, "the onboarding daemon is not running"
        finally:
            # Ctrl-C in a terminal signals the whole foreground process group.
            os.killpg(make.pid, signal.SIGINT)
            output, _ = make.communicate(timeout=30)
        assert "onboarding stopped" in output, output
        assert not pid_path.exists()
        assert page(port) is None
        assert not alive(daemon_pid), "the daemon outlived make run"

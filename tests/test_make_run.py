"""`make run`: the site and every showcase daemon (under one supervisor) start together, Ctrl-C stops all,
and the first run leaves development settings that a command in any other terminal reads."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from daemons.console.stopping import stop
from daemons.process import pidfile
from signup_site.settings import secret_key_weakness
from tests.conftest import default_signals, wait_for
from tests.project_copy import copy_project, terminal_env
from tests.support.net import free_port
from tests.support.processes import alive

pytestmark = pytest.mark.process

ENV_WRITTEN = "make run: wrote .env for development"


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


def start_make_run(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """`make run` in `root` on a free port, in a process group of its own (a terminal's foreground job), serving.

    The port is known free only when runserver binds it: another process may take it first, then we retry.
    """
    for _ in range(3):
        port = free_port()
        make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=root, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                process_group=0, preexec_fn=default_signals)
        wait_for(lambda port=port, make=make: page(port) == 200 or make.poll() is not None,
                 timeout=90, message="the site on its port")
        if make.poll() is None:
            return make, port
        output = make.communicate()[0]
        if "port is already in use" not in output:
            pytest.fail(f"make run exited with {make.returncode}:\n{output}")
    pytest.fail("make run found no free port in 3 tries")


def ctrl_c(make: subprocess.Popen) -> str:
    """Ctrl-C in make run's terminal (the whole foreground process group); its output."""
    os.killpg(make.pid, signal.SIGINT)
    output, _ = make.communicate(timeout=60)
    wait_for(lambda: not group_alive(make.pid), timeout=10, message="make run's processes to exit")
    return output


def stop_leftovers(make: subprocess.Popen, run_dir: Path) -> None:
    """Whatever make run left (its process group, the detached daemons) is killed: a failed test leaves nothing."""
    if group_alive(make.pid):
        os.killpg(make.pid, signal.SIGKILL)
    if make.poll() is None:
        make.kill()
        make.communicate()
    for path in run_dir.glob("*.pid"):
        stop(path, timeout=5, kill=True)


def test_make_run_twice_and_ctrl_c_leaves_nothing_behind(tmp_path) -> None:
    project = copy_project(tmp_path / "project")
    env = terminal_env()
    run_dir = project.root / "var" / "run"
    for attempt in range(2):
        make, port = start_make_run(project.root, env)
        try:
            daemon_pid = pidfile.read_holder(run_dir / "onboarding.pid")
            assert daemon_pid, "the onboarding daemon is not running"
            others = {path.name: pidfile.read_holder(path) for path in run_dir.glob("*.pid")}
            assert {"supervisor.pid", "onboarding.pid", "digest.pid"} <= set(others), others
            # Another terminal, without make run's DEBUG=1: the settings come from the .env make run wrote.
            status = subprocess.run([".venv/bin/python", "manage.py", "daemonstatus"], cwd=project.root, env=env,
                                    capture_output=True, text=True, timeout=60)
            assert status.returncode == 0, status.stdout + status.stderr
            output = ctrl_c(make)
            assert output.count(ENV_WRITTEN) == (1 if attempt == 0 else 0), output
            assert "supervisor stopped" in output, output
            assert not list(run_dir.glob("*.pid")), output
            assert page(port) is None
            assert not any(alive(pid) for pid in others.values() if pid), "a daemon outlived make run"
        finally:
            stop_leftovers(make, run_dir)
    dotenv = project.root / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600, "the secret key is readable by others"
    values = dict(line.split("=", 1) for line in dotenv.read_text().splitlines() if not line.startswith("#"))
    assert values["DEBUG"] == "1" and secret_key_weakness(values["SECRET_KEY"]) == ""


def test_make_run_keeps_an_existing_env_file(tmp_path) -> None:
    project = copy_project(tmp_path / "project")
    dotenv = project.root / ".env"
    dotenv.write_text("DEBUG=1\n# mine\n")
    made = subprocess.run(["make", "-s", ".env"], cwd=project.root, env=terminal_env(), capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0 and ENV_WRITTEN not in made.stdout, made.stdout + made.stderr
    assert dotenv.read_text() == "DEBUG=1\n# mine\n"

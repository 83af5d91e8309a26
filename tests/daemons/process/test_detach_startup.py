"""`rundaemon NAME --detach` when the daemon never reports ready: one line with the reason, no PID file left."""
from __future__ import annotations

import os
import signal

import pytest

from daemons.process import pidfile
from tests.conftest import wait_for
from tests.support.processes import alive

pytestmark = pytest.mark.process


def test_a_setup_that_raises_fails_the_detached_start_with_its_reason(project) -> None:
    result = project.manage("rundaemon", "fragile", "--detach", env={
        "DJANGO_SETTINGS_MODULE": "tests.supervisorapp.settings", "SUPERVISORAPP_FAIL_SETUP": "1"})
    assert result.returncode == 1, result.stdout
    assert result.stderr == ("CommandError: fragile: setup failed: RuntimeError: the fragile daemon failed to set "
                             "up on purpose\n")
    assert result.stdout == ""
    assert not project.pid_file("fragile").exists()
    assert not (project.run_dir / "fragile.sock").exists()


def kill_before_ready(project, tmp_path) -> tuple[int, str, str]:
    """`rundaemon heldsetup --detach`, its daemon SIGKILLed in setup(), before READY: the daemon's PID and the
    command's exit status and stderr (its stdout must be empty)."""
    held = tmp_path / "held"
    command = project.popen("rundaemon", "heldsetup", "--detach", env={
        "TESTAPP_TICKS_FILE": str(held), "TESTAPP_RELEASE_FILE": str(tmp_path / "never")})
    pid = int(wait_for(lambda: held.exists() and held.read_text().strip(), timeout=30,
                       message="the daemon to reach its setup"))
    # Locked and named: the daemon got that far before it died.
    assert pidfile.read_holder(project.pid_file("heldsetup")) == pid
    assert command.poll() is None, "the command waits for the daemon's word"
    os.kill(pid, signal.SIGKILL)
    out, err = command.communicate(timeout=30)
    wait_for(lambda: not alive(pid), message="the daemon to be gone")
    assert out == ""
    return pid, command.returncode, err


def test_a_daemon_killed_before_it_is_ready_fails_the_start_and_leaves_no_pid_file(project, tmp_path) -> None:
    pid, code, err = kill_before_ready(project, tmp_path)
    assert code == 1, err
    assert err == f"CommandError: heldsetup: it exited during startup; see {project.log_file('heldsetup')}\n"
    # The command that saw the start fail removed the file: nothing reads as stale, and a start goes ahead.
    assert not project.pid_file("heldsetup").exists()
    status = project.manage("daemonstatus", "heldsetup")
    assert "stopped" in status.stdout and "stale" not in status.stdout, status.stdout
    again = project.start("heldsetup")
    assert again != pid and pidfile.read_holder(project.pid_file("heldsetup")) == again

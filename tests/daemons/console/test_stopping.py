"""Status and stop as another user: the lock holder is found through /proc/locks, never by taking the lock."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from daemons.process import pidfile
from daemons.process.exits import State
from daemons.process.pidfile import PidFile
from tests.conftest import BASE_DIR, default_signals, wait_for
from tests.other_user import UserPython, reachable_temp_dir

pytestmark = pytest.mark.process

# Run as nobody: what status and stop see of the PID file given as argv[1].
ASK = """
import json, os, sys
from pathlib import Path
from daemons.process import pidfile
from daemons.console import stopping
path = Path(sys.argv[1])
state = pidfile.inspect(path)
result = {"state": state.state, "pid": state.pid, "fd_readable": os.access(f"/proc/{state.pid}/fd", os.R_OK)}
if sys.argv[2:] == ["stop"]:
    try:
        outcome = stopping.stop(path, timeout=20)
        result["stop"] = [outcome.state, outcome.pid]
    except stopping.StopError as exc:
        result["stop_error"] = str(exc)
print(json.dumps(result))
"""

# Run as root: lock the PID file, fork (as --detach does, so /proc/locks names a parent that
# has gone), write the child's PID, optionally drop to nobody, report the PID and wait.
HOLD = """
import os, pwd, signal, sys, time
from pathlib import Path
from daemons.process.pidfile import PidFile
signal.signal(signal.SIGTERM, signal.SIG_DFL)
lock = PidFile(Path(sys.argv[1]))
lock.acquire()
if os.fork():
    os._exit(0)
lock.write()
if sys.argv[2] == "drop":
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
print(os.getpid(), flush=True)
time.sleep(120)
"""


def python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=BASE_DIR,
                            stdout=subprocess.PIPE, text=True, preexec_fn=default_signals)


def stdout_of(proc: subprocess.Popen) -> IO[str]:
    """The output of a child that python() started: always piped."""
    assert proc.stdout is not None
    return proc.stdout


@pytest.fixture
def ask_as_nobody(nobody_python: UserPython) -> Callable[..., dict]:
    """What status and stop, run as nobody, see of a PID file."""
    def ask(path: Path, *args: str) -> dict:
        proc = nobody_python.popen(ASK, str(path), *args)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        return json.loads(out)

    return ask


@pytest.fixture
def shared_dir(nobody_python: UserPython) -> Iterator[Path]:
    """A run directory every user can read, and nobody can write (the holder's user may differ)."""
    directory = Path(tempfile.mkdtemp(prefix="pidfile-users-", dir=reachable_temp_dir(nobody_python.user)))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def holder(shared_dir: Path) -> Iterator:
    started: list[int] = []

    def start(mode: str) -> int:
        proc = python(HOLD, str(shared_dir / "x.pid"), mode)
        pid = int(stdout_of(proc).readline())
        proc.wait(timeout=30)
        stdout_of(proc).close()
        started.append(pid)
        return pid

    try:
        yield start
    finally:
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.other_user
def test_another_user_sees_roots_daemon_running_and_is_told_it_may_not_stop_it(
        shared_dir, ask_as_nobody, holder) -> None:
    pid = holder("keep")
    seen = ask_as_nobody(shared_dir / "x.pid", "stop")
    assert not seen["fd_readable"]
    assert (seen["state"], seen["pid"]) == ("running", pid)
    assert seen["stop_error"] == (f"no permission to signal pid {pid}, which runs as user root; "
                                  "run this as that user or as root")
    assert alive(pid)


@pytest.mark.other_user
def test_a_daemon_that_dropped_privileges_is_stopped_by_its_own_user(shared_dir, ask_as_nobody, holder) -> None:
    pid = holder("drop")
    # After setuid the process is not dumpable: its own user may not read /proc/PID/fd.
    seen = ask_as_nobody(shared_dir / "x.pid", "stop")
    assert not seen["fd_readable"]
    assert (seen["state"], seen["pid"]) == ("running", pid)
    assert seen["stop"] == ["stopped", pid]
    wait_for(lambda: not alive(pid), message="the holder to exit")


@pytest.mark.other_user
def test_a_locked_file_still_naming_a_reused_pid_is_not_trusted_by_another_user(shared_dir, ask_as_nobody) -> None:
    """A new holder has the lock but has not written yet; the old content names a PID reused since."""
    path = shared_dir / "x.pid"
    bystander = python("import time; print('up', flush=True); time.sleep(120)")
    locker = python("import fcntl, sys, time\n"
                    f"f = open({str(path)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                    "print('locked', flush=True); time.sleep(120)\n")
    try:
        assert stdout_of(bystander).readline() == "up\n" and stdout_of(locker).readline() == "locked\n"
        path.write_text(f"{bystander.pid}\n")
        written = path.stat().st_mtime - 60
        os.utime(path, (written, written))  # the predecessor wrote it before the bystander started
        seen = ask_as_nobody(path, "stop")
        assert (seen["state"], seen["pid"]) == ("running", None)
        assert seen["stop_error"] == f"{path} is locked but the process holding it can't be identified; not signalled"
        assert bystander.poll() is None and locker.poll() is None
    finally:
        for proc in (bystander, locker):
            proc.kill()
            proc.wait()
            stdout_of(proc).close()


def test_release_removes_only_the_file_it_locked(tmp_path) -> None:
    path = tmp_path / "x.pid"
    lock = PidFile(path)
    lock.acquire()
    lock.write()
    path.unlink()
    path.write_text("12345\n")  # someone else's file now sits at the path
    lock.release()
    assert path.read_text() == "12345\n"


def test_looking_takes_no_lock(tmp_path, monkeypatch) -> None:
    """A shared flock taken to look would make a concurrent start fail."""
    path = tmp_path / "x.pid"
    with PidFile(path):
        def no_locks(*args: object) -> None:
            raise AssertionError("status must not take a lock")

        monkeypatch.setattr("fcntl.flock", no_locks)
        monkeypatch.setattr("fcntl.lockf", no_locks)
        assert pidfile.inspect(path) == pidfile.PidState(State.RUNNING, os.getpid())
        assert pidfile.is_locked(path)
    assert not pidfile.is_locked(path)


def test_stopdaemon_says_in_one_line_that_it_will_not_guess_the_holder(project) -> None:
    path = project.pid_file("counter")
    path.parent.mkdir(parents=True)
    path.write_text("")
    locker = python("import fcntl, sys, time\n"
                    f"f = open({str(path)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                    "print('locked', flush=True); time.sleep(120)\n")
    try:
        assert stdout_of(locker).readline() == "locked\n"
        result = project.manage("stopdaemon", "counter")
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert line.endswith(f"{path} is locked but the process holding it can't be identified; not signalled")
        status = project.manage("daemonstatus", "counter", "--json")
        assert json.loads(status.stdout)[0]["state"] == "running" and status.returncode == 0
        assert locker.poll() is None
    finally:
        locker.kill()
        locker.wait()
        stdout_of(locker).close()

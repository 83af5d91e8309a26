from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.process import pidfile
from daemons.process.exits import State
from daemons.process.pidfile import AlreadyRunning, PidFile, PidFileError


def test_writes_pid_alone_on_first_line_and_removes_on_release(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pid"
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"
        assert oct(path.stat().st_mode & 0o777) == oct(0o644)
        assert pidfile.inspect(path) == pidfile.PidState(State.RUNNING, os.getpid())
    assert not path.exists()
    assert pidfile.inspect(path).state == "stopped"


def test_second_holder_is_refused_with_the_first_pid(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    with PidFile(path):
        with pytest.raises(AlreadyRunning, match=f"already running \\(pid {os.getpid()}\\)"):
            PidFile(path).acquire()
        assert path.read_text() == f"{os.getpid()}\n"


def test_stale_file_does_not_block_and_reused_pid_is_not_alive(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    # A live, unrelated process whose PID sits in a stale file.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(f"{other.pid}\n")
        state = pidfile.inspect(path)
        assert state.state == "stale" and state.pid == other.pid
        assert pidfile.read_holder(path, wait=0) is None
        with PidFile(path):
            assert path.read_text() == f"{os.getpid()}\n"
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_refuses_symlink_and_non_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "x.pid"
    link.symlink_to(target)
    with pytest.raises(PidFileError, match="symbolic link"):
        PidFile(link).acquire()
    assert target.read_text() == "keep me\n"

    fifo = tmp_path / "y.pid"
    os.mkfifo(fifo)
    with pytest.raises(PidFileError, match="not a regular file"):
        PidFile(fifo).acquire()


def test_refuses_world_writable_run_dir_without_sticky_bit(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o777)
    with pytest.raises(PidFileError, match="world-writable"):
        PidFile(run / "x.pid").acquire()
    assert not (run / "x.pid").exists()
    run.chmod(0o1777)
    with PidFile(run / "x.pid"):
        pass


def test_a_locked_file_naming_another_process_is_not_trusted(tmp_path: Path) -> None:
    """The number counts only if that very process has the file open (it holds the lock)."""
    from daemons.console.stopping import StopError, stop

    path = tmp_path / "x.pid"
    path.write_text("")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"f = open({str(path)!r}, 'r+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True); time.sleep(30)\n"
    )], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None  # stdout=PIPE
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert holder.stdout.readline().strip() == "locked"
        path.write_text(f"{bystander.pid}\n")
        assert pidfile.is_locked(path)
        assert pidfile.read_holder(path, wait=0) is None
        # Locked means running: stop refuses to guess rather than say "not running".
        with pytest.raises(StopError, match="can't be identified; not signalled"):
            stop(path, timeout=0.2)
        assert bystander.poll() is None and holder.poll() is None
        path.write_text(f"{holder.pid}\n")
        assert pidfile.read_holder(path, wait=0) == holder.pid
    finally:
        for proc in (holder, bystander):
            proc.kill()
            proc.wait()
        holder.stdout.close()

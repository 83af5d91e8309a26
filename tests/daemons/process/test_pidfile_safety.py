"""PID-file safety seen from the commands an operator runs."""
from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import wait_for
from tests.other_user import UserPython, reachable_temp_dir
from tests.support.processes import alive

pytestmark = pytest.mark.process


def test_symlinked_pid_file_is_refused_and_target_untouched(project, tmp_path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    project.run_dir.mkdir(parents=True)
    project.pid_file("counter").symlink_to(target)
    for args in (["rundaemon", "counter", "--detach"], ["rundaemon", "counter"]):
        result = project.manage(*args)
        assert result.returncode == 1
        assert result.stderr.strip().endswith("it is a symbolic link")
        assert len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "keep\n"


def test_world_writable_run_dir_is_refused(project) -> None:
    project.run_dir.mkdir(parents=True)
    project.run_dir.chmod(0o777)
    result = project.manage("rundaemon", "counter", "--detach")
    assert result.returncode == 1 and "world-writable without the sticky bit" in result.stderr
    assert list(project.run_dir.iterdir()) == []


def test_file_modes(project) -> None:
    project.start("counter")
    assert stat.S_IMODE(project.pid_file("counter").stat().st_mode) == 0o644
    assert stat.S_IMODE(project.log_file("counter").stat().st_mode) & 0o027 == 0


def test_unknown_user_fails_the_start(project) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    result = project.manage("rundaemon", "counter", "--detach", "--user", "no-such-user-here")
    assert result.returncode == 1 and "unknown user 'no-such-user-here'" in result.stderr


@pytest.mark.other_user
def test_user_option_drops_privileges_with_root_owned_pid_file(project, nobody_python: UserPython) -> None:
    nobody = nobody_python.user
    # A world-traversable home for the daemon's database, owned by the daemon's user.
    home = Path(tempfile.mkdtemp(prefix="daemon-user-", dir=reachable_temp_dir(nobody)))
    home.chmod(0o755)
    try:
        db = home / "db.sqlite3"
        source = sqlite3.connect(settings.DATABASES["default"]["NAME"])
        copy = sqlite3.connect(db)
        source.backup(copy)
        copy.close()
        source.close()
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        os.chown(db, nobody.pw_uid, nobody.pw_gid)
        env = {"DATABASE_URL": f"sqlite:///{db}", "DAEMONS_RUN_DIR": str(home / "run"),
               "DAEMONS_LOG_DIR": str(home / "log")}
        pid = project.start("counter", "--user", "nobody", env=env)
        status_lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        uid_line = next(line for line in status_lines if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {str(nobody.pw_uid)}
        pid_file = home / "run" / "counter.pid"
        assert pid_file.stat().st_uid == 0 and pid_file.read_text() == f"{pid}\n"
        assert (home / "log" / "counter.log").stat().st_uid == nobody.pw_uid
        wait_for(lambda: "counted 1 tick" in (home / "log" / "counter.log").read_text(), message="ticks as nobody")
        stopped = project.manage("stopdaemon", "counter", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert not alive(pid)
        assert project.manage("daemonstatus", "counter", env=env).returncode == 3
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)

"""--user: the wake-up socket is handed to the daemon's user, never through a symbolic link."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from daemons.process.privileges import Credentials, PrivilegeError
from tests.conftest import wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root (CI runs as root)")


@needs_root
def test_hand_over_changes_the_socket_not_what_a_symlink_points_to(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    creds = Credentials("nobody", nobody.pw_uid, nobody.pw_gid)
    sock_path = tmp_path / "d.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        creds.hand_over(sock_path, stat.S_IFSOCK)
    assert (sock_path.lstat().st_uid, sock_path.lstat().st_gid) == (nobody.pw_uid, nobody.pw_gid)

    # The socket swapped for a link to a file of root's between bind and hand-over.
    victim = tmp_path / "shadow"
    victim.write_text("root's\n")
    sock_path.unlink()
    sock_path.symlink_to(victim)
    with pytest.raises(PrivilegeError, match="replaced by something else"):
        creds.hand_over(sock_path, stat.S_IFSOCK)
    assert victim.stat().st_uid == 0


@needs_root
def test_a_user_daemon_owns_its_wake_socket_and_is_woken_through_it(project) -> None:
    from daemons.cluster.wakeup import wake

    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="daemon-user-"))
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
        ticks = home / "ticks"
        ticks.touch()
        ticks.chmod(0o666)
        env = {"DATABASE_URL": f"sqlite:///{db}", "DAEMONS_RUN_DIR": str(home / "run"),
               "DAEMONS_LOG_DIR": str(home / "log"), "TESTAPP_INTERVAL": "3600", "TESTAPP_TICKS_FILE": str(ticks)}
        project.env.update(env)
        pid = project.start("counter", "--user", "nobody")
        sock_path = home / "run" / "counter.sock"
        info = sock_path.lstat()
        assert stat.S_ISSOCK(info.st_mode) and info.st_uid == nobody.pw_uid
        wait_for(lambda: len(ticks.read_text().splitlines()) == 1, message="the first tick")
        # What gives memory back after work was loaded before the drop: nobody may not read the interpreter's
        # own library (this machine's lives under /root).
        assert "_ctypes" in Path(f"/proc/{pid}/maps").read_text()
        assert wake("counter", home / "run") == 1
        wait_for(lambda: len(ticks.read_text().splitlines()) == 2, message="a tick after the wake-up")
        assert project.manage("stopdaemon", "counter").returncode == 0
    finally:
        project.stop_all()
        shutil.rmtree(home, ignore_errors=True)

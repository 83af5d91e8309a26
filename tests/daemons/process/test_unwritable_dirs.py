"""A run or log directory the daemon's user may not write (EACCES): one line naming the path, a non-zero exit,
no PID file, in every way a daemon is started. Run as nobody, since root may write anywhere."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import default_signals, process_env
from tests.other_user import UserPython, reachable_temp_dir

pytestmark = [pytest.mark.process, pytest.mark.other_user]

MANAGE = "import sys; from django.core.management import execute_from_command_line; " \
         "execute_from_command_line(['manage.py', *sys.argv[1:]])"
WAYS = [("counter",), ("counter", "--once"), ("counter", "--detach"), ("--all", "--detach")]


@pytest.fixture
def dirs(nobody_python: UserPython) -> Iterator[tuple[Path, Path]]:
    """(root's directory, nobody's directory): nobody may enter the first but not write it, and owns the second."""
    top = Path(tempfile.mkdtemp(prefix="dirs-", dir=reachable_temp_dir(nobody_python.user)))
    top.chmod(0o755)
    roots, own = top / "roots", top / "own"
    roots.mkdir(mode=0o755)
    own.mkdir(mode=0o755)
    shutil.chown(own, nobody_python.user.pw_uid, nobody_python.user.pw_gid)
    try:
        yield roots, own
    finally:
        shutil.rmtree(top, ignore_errors=True)


def rundaemon_as_nobody(nobody_python: UserPython, tmp_path: Path, own: Path, *args: str,
                        **dirs: Path) -> subprocess.CompletedProcess[str]:
    """`rundaemon ARGS` as nobody, with the directories `dirs`; `own` is a directory nobody may write."""
    # The test settings make the test database's directory: one nobody may write, wherever the checkout is.
    env = {**process_env(tmp_path), **nobody_python.env, "TEST_SQLITE_PATH": str(own / "db" / "test.sqlite3"),
           **{k: str(v) for k, v in dirs.items()}}
    return subprocess.run([*nobody_python.switch, str(nobody_python.python), "-s", "-c", MANAGE, "rundaemon", *args],
                          cwd=nobody_python.cwd, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, preexec_fn=default_signals)


@pytest.mark.parametrize("args", WAYS, ids=" ".join)
def test_a_log_directory_the_user_may_not_write_is_one_line_and_no_pid_file(
        nobody_python: UserPython, dirs: tuple[Path, Path], tmp_path: Path, args: tuple[str, ...]) -> None:
    roots, own = dirs
    result = rundaemon_as_nobody(nobody_python, tmp_path, own, *args, DAEMONS_RUN_DIR=own / "run",
                                 DAEMONS_LOG_DIR=roots / "log")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == (f"CommandError: DAEMONS_LOG_DIR (from the environment): {roots} is not writable by "
                             f"this user (daemons.E002)\n")
    assert not (own / "run").exists() or not any((own / "run").iterdir())


@pytest.mark.parametrize("args", WAYS, ids=" ".join)
def test_a_run_directory_the_user_may_not_write_is_one_line_and_no_pid_file(
        nobody_python: UserPython, dirs: tuple[Path, Path], tmp_path: Path, args: tuple[str, ...]) -> None:
    roots, own = dirs
    result = rundaemon_as_nobody(nobody_python, tmp_path, own, *args, DAEMONS_RUN_DIR=roots / "run",
                                 DAEMONS_LOG_DIR=own / "log")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("CommandError: DAEMONS_RUN_DIR (from the environment): "), result.stderr
    assert f"{roots} is not writable by this user" in result.stderr and result.stderr.count("\n") == 1
    assert list(roots.iterdir()) == []

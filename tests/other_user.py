"""Python run as another user (nobody), from files that user can read, wherever the checkout lives.

A checkout in a private directory (under /root, or one `mktemp -d` made) keeps the project and its .venv
where another user can't go, and the venv's interpreter may live in one too (pyenv under /root). Python
started there as that user dies with ModuleNotFoundError before it tests anything. The `nobody_python`
fixture hands the tests an interpreter and an import path the user can read: the originals where the
user can reach them, else copies (hard links where the file system allows) in a directory it can enter.

A pytest plugin (tests/conftest.py lists it): the fixture, and the `other_user` marker, which the
private-checkout test selects.
"""
from __future__ import annotations

import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import default_signals
from tests.project_copy import BASE_DIR, project_files

USER = "nobody"
READ, SEARCH = 0o4, 0o1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "other_user: runs code as another user (nobody); needs root")


def permitted(user: pwd.struct_passwd, info: os.stat_result, bits: int) -> bool:
    """Whether the mode bits give `user` (with its own group only, as setpriv --clear-groups leaves it) `bits`."""
    if info.st_uid == user.pw_uid:
        shift = 6
    elif info.st_gid == user.pw_gid:
        shift = 3
    else:
        shift = 0
    return (info.st_mode >> shift) & bits == bits


def reachable(path: Path, user: pwd.struct_passwd, bits: int = READ) -> bool:
    """Whether `user` may reach `path` and has `bits` on it (a directory: also search), by mode bits alone.

    Every directory above the path, as written and once symbolic links are resolved, must be searchable.
    ACLs are not consulted: at worst, something is copied that needn't have been.
    """
    for candidate in dict.fromkeys((path.absolute(), path.resolve())):
        try:
            if not all(permitted(user, os.stat(parent), SEARCH) for parent in candidate.parents):
                return False
            info = os.stat(candidate)
        except OSError:
            return False
        if not permitted(user, info, bits | (SEARCH if stat.S_ISDIR(info.st_mode) else 0)):
            return False
    return True


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link costs no copy; another file system (or a refused link) gets a real copy."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def copy_tree(source: Path, destination: Path, ignore: Callable[[str, list[str]], Iterable[str]] | None = None) -> None:
    """`source`'s files at `destination`, its directories searchable by everyone.

    Only the new directories' modes are changed: a hard-linked file shares its mode with the original.
    """
    shutil.copytree(source, destination, copy_function=_link_or_copy, ignore=ignore)
    for directory, _dirs, _files in os.walk(destination):
        os.chmod(directory, os.stat(directory).st_mode | 0o555)


@dataclass(frozen=True)
class UserPython:
    """How to run Python as another user: its interpreter, import path and a working directory it can read."""

    user: pwd.struct_passwd
    python: Path
    env: dict[str, str]
    cwd: Path

    @property
    def switch(self) -> list[str]:
        """The command that runs what follows it as the user, with the user's group and no other."""
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups"]

    def popen(self, script: str, *args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen:
        """`python -c script args` as the user, its output piped, default signal handlers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_LIBRARY_PATH"))}
        return subprocess.Popen([*self.switch, str(self.python), "-s", "-c", script, *args], cwd=self.cwd,
                                env={**env, **self.env}, stdout=stdout, text=True, preexec_fn=default_signals)


def _interpreter(user: pwd.struct_passwd, copies: Path) -> tuple[Path, dict[str, str]]:
    """The base interpreter (a venv's python links to it), or a copy of it and its standard library."""
    prefix = Path(sys.base_prefix)
    executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    stdlib = Path(sysconfig.get_path("stdlib"))
    needed = [stdlib]
    shared = sysconfig.get_config_var("INSTSONAME") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
    if shared:
        needed.append(Path(sysconfig.get_config_var("LIBDIR")) / shared)
    if reachable(executable, user, READ | SEARCH) and all(reachable(path, user) for path in needed):
        return executable, {}
    # The copy finds its standard library beside it (lib/pythonX.Y, found from the executable's place) and
    # its shared library through LD_LIBRARY_PATH, which the loader tries before the build's RUNPATH.
    python = copies / executable.relative_to(prefix)
    python.parent.mkdir(parents=True)
    _link_or_copy(str(executable), str(python))
    copy_tree(stdlib, copies / stdlib.relative_to(prefix), ignore=shutil.ignore_patterns("site-packages", "test"))
    env = {}
    if shared:
        library = Path(sysconfig.get_config_var("LIBDIR")) / shared
        (copies / library.parent.relative_to(prefix)).mkdir(parents=True, exist_ok=True)
        _link_or_copy(str(library.resolve()), str(copies / library.relative_to(prefix)))
        env["LD_LIBRARY_PATH"] = str(copies / library.parent.relative_to(prefix))
    os.chmod(copies, 0o755)
    return python, env


def python_as(user: pwd.struct_passwd, copies: Path) -> UserPython:
    """Python for `user`: the project and the installed packages on its import path, copied to `copies`
    (a directory the user can enter) wherever the user can't read the originals."""
    python, env = _interpreter(user, copies / "python")
    project = BASE_DIR
    if not reachable(BASE_DIR, user):
        project = copies / "project"
        copy_tree(BASE_DIR, project, ignore=project_files)
    path = [project]
    for index, packages in enumerate(dict.fromkeys(map(Path, site.getsitepackages()))):
        if packages.is_dir() and not reachable(packages, user):
            copy_tree(packages, copies / f"site-packages-{index}")
            packages = copies / f"site-packages-{index}"
        path.append(packages)
    env["PYTHONPATH"] = os.pathsep.join(map(str, path))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return UserPython(user, python, env, project)


def reachable_temp_dir(user: pwd.struct_passwd) -> Path:
    """The first temporary directory the user can enter: the run's own, else the system's."""
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        if reachable(Path(candidate), user, SEARCH):
            return Path(candidate)
    raise RuntimeError(f"no temporary directory that user {user.pw_name} can enter")


@pytest.fixture(scope="session")
def nobody_python() -> Iterator[UserPython]:
    """Python run as nobody, with the project and its packages importable wherever the checkout lives."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root (CI runs as root)")
    user = pwd.getpwnam(USER)
    copies = Path(tempfile.mkdtemp(prefix="as-nobody-", dir=reachable_temp_dir(user)))
    copies.chmod(0o755)
    try:
        yield python_as(user, copies)
    finally:
        shutil.rmtree(copies, ignore_errors=True)

"""The tests that act as another user pass wherever the checkout lives, a private directory included."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.other_user import READ, SEARCH, USER, reachable, reachable_temp_dir
from tests.project_copy import copy_project

pytestmark = pytest.mark.process


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A fresh directory every user can enter."""
    directory = Path(tempfile.mkdtemp(dir=reachable_temp_dir(pwd.getpwnam(USER))))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_reachable_needs_every_directory_above_searchable(open_dir: Path) -> None:
    user = pwd.getpwnam(USER)
    top = open_dir / "top"
    (top / "inner").mkdir(parents=True)
    (top / "inner" / "file").write_text("x")
    top.chmod(0o755)
    assert reachable(top / "inner" / "file", user)
    top.chmod(0o700)
    assert not reachable(top / "inner" / "file", user)
    assert not reachable(top / "inner", user, SEARCH)
    top.chmod(0o711)  # searchable, not listable
    assert reachable(top / "inner" / "file", user)
    assert not reachable(top, user, READ)
    (top / "inner" / "file").chmod(0o600)
    assert not reachable(top / "inner" / "file", user)
    link = open_dir / "link"
    link.symlink_to(top / "inner")
    top.chmod(0o700)
    assert not reachable(link, user), "a symbolic link leads into a private directory"


@pytest.mark.timeout(600)
def test_the_other_user_tests_pass_from_a_checkout_in_a_private_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root (CI runs as root)")
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)  # as `mktemp -d` makes it, or /root
    checkout = copy_project(private / "checkout")
    # The kernel agrees that nobody can't reach the checkout, nor the venv seen through it.
    for path in (checkout.root / "manage.py", Path(checkout.python)):
        seen = subprocess.run(["setpriv", "--reuid", USER, "--regid", str(pwd.getpwnam(USER).pw_gid), "--clear-groups",
                               "test", "-r", str(path)], capture_output=True)
        assert seen.returncode == 1, f"nobody can read {path}: the test proves nothing"
    result = checkout.run(checkout.python, "-m", "pytest", "-p", "no:cacheprovider", "-m", "other_user",
                          "tests", timeout=540)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", output)}
    assert counts.get("passed", 0) >= 4 and set(counts) == {"passed"}, output

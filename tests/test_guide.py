"""docs/guide.md runs: every shell block, in order, in a fresh copy of the project."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.project_copy import BASE_DIR, copy_project

pytestmark = pytest.mark.process
GUIDE = BASE_DIR / "docs" / "guide.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of the guide, in order."""
    return [(info.strip(), body) for info, body in FENCE.findall(GUIDE.read_text())]


def test_the_guide_has_the_steps_it_promises() -> None:
    infos = [info for info, _ in blocks()]
    assert infos.count("sh") >= 10 and "sh server" in infos
    text = GUIDE.read_text()
    for command in ("makedaemon tidy_names", "pytest", "rundaemon tidy_names --detach", "daemonstatus tidy_names",
                    "daemonconfig tidy_names --systemd"):
        assert command in text


def test_every_command_in_the_guide_works(tmp_path: Path) -> None:
    proj = copy_project(tmp_path / "project")
    try:
        for number, (info, body) in enumerate(blocks(), 1):
            where = f"block {number} ({info or 'plain'}) of docs/guide.md:\n{body}"
            if info == "sh":
                result = proj.run("bash", "-euo", "pipefail", "-c", body, timeout=120)
                assert result.returncode == 0, f"{where}\nfailed:\n{result.stdout}{result.stderr}"
            elif info == "sh server":
                result = proj.run("bash", "-n", "-c", body)
                assert result.returncode == 0, f"{where}\ndoes not parse:\n{result.stderr}"
            elif info.startswith("python file="):
                path = proj.root / info.split("=", 1)[1]
                assert body in path.read_text(), f"{where}\nis not what {path.name} holds after the steps before it"
        # The steps left what they promise.
        assert "Type=notify" in (proj.root / "tidy_names.service").read_text()
        assert "Ada Lovelace" in (proj.root / "tests/customers/test_tidy_names_daemon.py").read_text()
        status = proj.manage("daemonstatus", "tidy_names")
        assert status.returncode == 3 and "stopped" in status.stdout  # the guide stopped it
    finally:
        proj.manage("stopdaemon", "tidy_names", "--timeout", "5", "--kill")

"""docs/operations.md shows the files in deploy/ exactly, so the copy-paste examples can't go stale."""
from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def test_every_file_block_matches_its_deploy_file() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"^```\w+ file=(\S+)\n(.*?)^```$", doc, flags=re.M | re.S)
    assert {name for name, _ in blocks} == {
        "deploy/onboarding.service", "deploy/onboarding.supervisor.conf", "deploy/onboarding.logrotate"}
    for name, body in blocks:
        assert body == (ROOT / name).read_text(), f"docs/operations.md is out of date for {name}"

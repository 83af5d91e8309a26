"""Every module, class or function the docs name in backquotes exists where they say: a move can't leave them behind."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
# `daemons.cluster.heartbeat.instance_state`, `customers.signup.customer_create`; not check ids (`daemons.E001`).
REFERENCE = re.compile(r"`((?:daemons|customers)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?![0-9])")
CHECK_ID = re.compile(r"\.[EW]\d*$")


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_dotted_name_in_the_docs_resolves() -> None:
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in REFERENCE.finditer(doc.read_text()):
            dotted = match.group(1)
            if not CHECK_ID.search(dotted) and not resolves(dotted):
                missing.append(f"{doc.relative_to(ROOT)}: {dotted}")
    assert not missing, "the docs name what does not exist:\n" + "\n".join(missing)

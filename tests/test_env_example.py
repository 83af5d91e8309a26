"""`.env.example` documents every variable the settings read."""
from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def test_every_environment_variable_is_documented() -> None:
    source = (ROOT / "signup_site" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.[a-z_]+)?\(\s*"([A-Z_]+)"', source))
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert read, "found no env() calls in settings"
    assert read - documented == set()

"""The missing-prerequisite rule: a skip only where nobody could have installed the tool or server."""
from __future__ import annotations

import pytest

from tests.prerequisites import missing


@pytest.mark.parametrize(("ci", "uid", "outcome"), [
    ("1", 1000, pytest.fail.Exception),
    ("true", 1000, pytest.fail.Exception),
    ("", 0, pytest.fail.Exception),
    ("", 1000, pytest.skip.Exception),
    ("0", 1000, pytest.skip.Exception),
])
def test_a_missing_prerequisite_fails_in_ci_and_as_root_and_skips_otherwise(monkeypatch, ci, uid, outcome) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr("os.geteuid", lambda: uid)
    with pytest.raises(outcome, match="frobnicate is missing"):
        missing("frobnicate is missing")

"""The one rule for a test whose tool or server is missing: skip on a developer's machine, fail where it must run.

`make test` as root installs every tool (scripts/test-env.d/) and starts the PostgreSQL cluster, and CI
(`.ci/run` exports CI=1) must prove every guarantee: there a missing prerequisite is a failure, never a
skip that a green run would hide.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """Fail the test in CI or as root (who could have installed it), else skip it; `reason` says what and how."""
    if in_ci() or os.geteuid() == 0:
        pytest.fail(reason)
    pytest.skip(reason)

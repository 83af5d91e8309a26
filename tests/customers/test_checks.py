"""The showcase's system checks refuse settings that would break onboarding's promise."""
from __future__ import annotations

import subprocess
import sys

import pytest

from customers.checks import check_onboarding_settings
from tests.conftest import BASE_DIR, process_env


def test_the_defaults_pass(settings) -> None:
    assert check_onboarding_settings() == []


def test_a_lease_shorter_than_three_send_deadlines_is_refused(settings) -> None:
    settings.ONBOARDING_LEASE_SECONDS = 59
    settings.ONBOARDING_SEND_DEADLINE_SECONDS = 20
    [error] = check_onboarding_settings()
    assert error.id == "customers.E002" and "three times" in error.msg
    settings.ONBOARDING_LEASE_SECONDS = 60
    assert check_onboarding_settings() == []


@pytest.mark.parametrize("lease", [3.1, 3.9, 6.2, 60.0])
def test_the_default_deadline_of_a_third_of_the_lease_passes(settings, lease) -> None:
    settings.ONBOARDING_LEASE_SECONDS = lease
    settings.ONBOARDING_SEND_DEADLINE_SECONDS = lease / 3
    settings.ONBOARDING_SMTP_TIMEOUT_SECONDS = lease / 12
    assert check_onboarding_settings() == []


def test_a_read_timeout_longer_than_the_deadline_is_refused(settings) -> None:
    settings.ONBOARDING_SMTP_TIMEOUT_SECONDS = 30
    settings.ONBOARDING_SEND_DEADLINE_SECONDS = 20
    assert [e.id for e in check_onboarding_settings()] == ["customers.E003"]


@pytest.mark.parametrize("value", [0, -1.0, "5"])
def test_numbers_must_be_positive(settings, value) -> None:
    settings.ONBOARDING_BATCH_SIZE = value
    [error] = check_onboarding_settings()
    assert error.id == "customers.E001" and "ONBOARDING_BATCH_SIZE" in error.msg


def test_rundaemon_refuses_to_start_with_a_too_short_lease(tmp_path) -> None:
    env = {**process_env(tmp_path), "ONBOARDING_LEASE_SECONDS": "30", "ONBOARDING_SEND_DEADLINE_SECONDS": "20"}
    result = subprocess.run([sys.executable, "manage.py", "rundaemon", "onboarding", "--once"], cwd=BASE_DIR,
                            env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "customers.E002" in result.stderr and "Traceback" not in result.stderr


def test_a_send_concurrency_below_one_is_refused(settings) -> None:
    settings.ONBOARDING_SEND_CONCURRENCY = 0
    [error] = check_onboarding_settings()
    assert error.id == "customers.E001" and "ONBOARDING_SEND_CONCURRENCY" in error.msg

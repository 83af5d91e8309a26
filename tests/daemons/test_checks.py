from __future__ import annotations

from pathlib import Path

from daemons.checks import check_daemon_settings


def ids(settings) -> dict[str, str]:
    return {error.id: error.msg for error in check_daemon_settings()}


def test_missing_directories_under_a_writable_parent_are_fine(settings, tmp_path: Path) -> None:
    settings.DAEMONS_RUN_DIR = tmp_path / "not" / "yet" / "run"
    settings.DAEMONS_LOG_DIR = tmp_path / "log"
    settings.SENTRY_DSN = "https://public@sentry.example/1"
    assert ids(settings) == {}


def test_paths_under_a_regular_file_fail(settings, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings.DAEMONS_RUN_DIR = blocker / "run"
    settings.DAEMONS_LOG_DIR = blocker
    errors = ids(settings)
    assert errors["daemons.E001"] == f"DAEMONS_RUN_DIR: {blocker} is a file, so {blocker / 'run'} can't be created"
    assert errors["daemons.E002"] == f"DAEMONS_LOG_DIR: {blocker} is not a directory"


def test_bad_sentry_dsn_and_stop_timeout_fail(settings) -> None:
    settings.SENTRY_DSN = "not a dsn"
    settings.DAEMONS_STOP_TIMEOUT = 0
    errors = ids(settings)
    assert "daemons.E005" in errors and "daemons.E004" in errors


def test_negative_interval_fails(settings, monkeypatch) -> None:
    from tests.testapp.daemons import CounterDaemon

    monkeypatch.setattr(CounterDaemon, "interval", -1)
    assert "interval must be zero or more" in ids(settings)["daemons.E003"]

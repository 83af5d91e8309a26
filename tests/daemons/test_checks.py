from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import CheckMessage, Error, Tags

from daemons import checks, conf
from daemons.checks import check_daemon_settings


def ids(settings) -> dict[str, str]:
    return {str(message.id): message.msg for message in check_daemon_settings()}


def test_missing_directories_under_a_writable_parent_are_fine(settings, tmp_path: Path) -> None:
    settings.DAEMONS_RUN_DIR = tmp_path / "not" / "yet" / "run"
    settings.DAEMONS_LOG_DIR = tmp_path / "log"
    settings.SENTRY_DSN = "https://public@sentry.example/1"
    assert ids(settings) == {}


def test_a_project_that_sets_nothing_gets_the_defaults_and_passes(settings, tmp_path: Path) -> None:
    for name in conf.SETTINGS:
        if hasattr(settings, conf.PREFIX + name):
            delattr(settings, conf.PREFIX + name)
    settings.BASE_DIR = tmp_path
    assert ids(settings) == {}
    assert conf.run_dir() == tmp_path / "var" / "run"
    assert conf.log_dir() == tmp_path / "var" / "log"
    assert conf.stop_timeout() == 8.0
    assert {name: conf.get(name) for name in conf.SETTINGS} == conf.DEFAULTS


def test_paths_under_a_regular_file_fail(settings, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings.DAEMONS_RUN_DIR = blocker / "run"
    settings.DAEMONS_LOG_DIR = blocker
    errors = ids(settings)
    assert errors["daemons.E001"] == f"DAEMONS_RUN_DIR: {blocker} is a file, so {blocker / 'run'} can't be created"
    assert errors["daemons.E002"] == f"DAEMONS_LOG_DIR: {blocker} is not a directory"


def test_relative_paths_are_taken_from_base_dir(settings, tmp_path: Path) -> None:
    settings.BASE_DIR = tmp_path
    settings.DAEMONS_RUN_DIR = "state/run"
    assert conf.run_dir() == tmp_path / "state" / "run"
    (tmp_path / "state").write_text("")
    assert ids(settings)["daemons.E001"] == (
        f"DAEMONS_RUN_DIR: {tmp_path / 'state'} is a file, so {tmp_path / 'state' / 'run'} can't be created")


@pytest.mark.parametrize("name", ["RUN_DIR", "LOG_DIR"])
def test_the_directories_from_the_environment_win_over_the_settings(settings, monkeypatch, tmp_path: Path,
                                                                    name: str) -> None:
    """What a service manager sets (systemd's RuntimeDirectory=), in a project whose settings never read it."""
    setattr(settings, conf.PREFIX + name, tmp_path / "from-settings")
    monkeypatch.setenv(conf.PREFIX + name, "")  # empty: as if unset
    assert conf.path(name) == tmp_path / "from-settings"
    monkeypatch.setenv(conf.PREFIX + name, str(tmp_path / "from-env"))
    assert conf.path(name) == tmp_path / "from-env"
    assert ids(settings) == {}
    # Only those two: every other setting is the project's.
    monkeypatch.setenv("DAEMONS_STOP_TIMEOUT", "1")
    assert conf.stop_timeout() == conf.DEFAULTS["STOP_TIMEOUT"]


@pytest.mark.parametrize(("name", "check_id"), [("RUN_DIR", "daemons.E001"), ("LOG_DIR", "daemons.E002")])
def test_an_unusable_directory_from_the_environment_fails_the_check_and_says_where_it_came_from(
        settings, monkeypatch, tmp_path: Path, name: str, check_id: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    setattr(settings, conf.PREFIX + name, tmp_path / "fine")
    monkeypatch.setenv(conf.PREFIX + name, str(blocker / "dir"))
    assert ids(settings) == {
        check_id: f"DAEMONS_{name} (from the environment): {blocker} is a file, so {blocker / 'dir'} can't be created"}


@pytest.mark.parametrize(
    ("name", "value", "check_id", "says"),
    [
        ("RUN_DIR", 3, "daemons.E001", "must be a directory path, got 3"),
        ("STOP_TIMEOUT", 0, "daemons.E004", "must be a positive number of seconds, got 0"),
        ("STOP_TIMEOUT", "8", "daemons.E004", "must be a positive number of seconds, got '8'"),
        ("STOP_TIMEOUT", True, "daemons.E004", "must be a positive number of seconds, got True"),
        ("LOG_LEVEL", "LOUD", "daemons.E006", "must be a logging level"),
        ("LOG_FORMAT", "xml", "daemons.E007", "must be \"text\" or \"json\", got 'xml'"),
        ("HEALTH_EXPECTED", "counter", "daemons.E009", "must be None or a list of daemon names"),
        ("HEALTH_EXPECTED", ["no-such-daemon"], "daemons.E009", "names no registered daemon: no-such-daemon"),
        ("METRICS_TOKEN", None, "daemons.E010", "must be a string, got None"),
        ("DASHBOARD_REFRESH", -1, "daemons.E011", "must be a positive number of seconds, got -1"),
        ("LISTEN", "no", "daemons.E012", "must be True or False, got 'no'"),
    ],
)
def test_each_setting_of_a_wrong_type_or_range_fails_with_its_own_id(settings, name, value, check_id, says) -> None:
    setattr(settings, conf.PREFIX + name, value)
    errors = ids(settings)
    assert list(errors) == [check_id]
    assert errors[check_id].startswith(f"DAEMONS_{name}: ") and says in errors[check_id]


@pytest.mark.parametrize(("name", "value"), [("LOG_LEVEL", "debug"), ("LOG_LEVEL", 10), ("LOG_FORMAT", "json"),
                                             ("HEALTH_EXPECTED", ["counter"]), ("STOP_TIMEOUT", 2),
                                             ("LISTEN", False)])
def test_good_values_pass(settings, name, value) -> None:
    setattr(settings, conf.PREFIX + name, value)
    assert ids(settings) == {}


def test_every_setting_is_validated_and_has_a_check_id() -> None:
    assert set(checks.CHECK_IDS) == set(conf.SETTINGS)
    assert {setting.kind for setting in conf.SETTINGS.values()} <= set(checks.VALIDATORS)
    assert all(setting.doc.strip() for setting in conf.SETTINGS.values())


def test_an_unknown_daemons_setting_is_a_warning_that_lists_the_known_ones(settings) -> None:
    settings.DAEMONS_STOP_TIMOUT = 3
    warning = ids(settings)["daemons.W001"]
    assert warning.startswith("DAEMONS_STOP_TIMOUT is not a setting") and "DAEMONS_STOP_TIMEOUT" in warning


def test_reading_an_unknown_setting_is_a_programming_error() -> None:
    with pytest.raises(KeyError, match="DAEMONS_NOPE"):
        conf.get("NOPE")


def test_bad_sentry_dsn_and_stop_timeout_fail(settings) -> None:
    settings.SENTRY_DSN = "not a dsn"
    settings.DAEMONS_STOP_TIMEOUT = 0
    errors = ids(settings)
    assert "daemons.E005" in errors and "daemons.E004" in errors


def test_a_dsn_without_sentry_sdk_installed_says_to_install_the_extra(settings, monkeypatch) -> None:
    settings.SENTRY_DSN = "https://public@sentry.example/1"
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # what Python sees when the package is absent
    assert ids(settings) == {
        "daemons.E008": "SENTRY_DSN is set but sentry-sdk is not installed: pip install 'django-daemon-kit[sentry]'"
    }


def test_negative_interval_fails(settings, monkeypatch) -> None:
    from tests.testapp.daemons import CounterDaemon

    monkeypatch.setattr(CounterDaemon, "interval", -1)
    assert "interval must be zero or more" in ids(settings)["daemons.E003"]


def test_a_system_without_pidfd_open_or_proc_gets_one_warning_line(settings, monkeypatch, tmp_path: Path) -> None:
    assert checks.linux_facilities_missing() is None  # the suite runs on Linux
    monkeypatch.delattr(os, "pidfd_open")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert ids(settings) == {"daemons.W002": "os.pidfd_open is not available on Darwin: --detach, --all, stopdaemon, "
                                             "restartdaemon, signaldaemon and daemonstatus need Linux; "
                                             "foreground rundaemon NAME and --once work"}
    both = checks.linux_facilities_missing(tmp_path / "no-proc")
    assert both is not None and both.startswith("os.pidfd_open and /proc are not available on Darwin: ")


def settings_table() -> str:
    """The settings table of docs/adopting.md, as daemons/conf.py defines the settings."""
    rows = [f"| `{conf.PREFIX}{name}` | `{setting.default!r}` | {setting.doc} |"
            for name, setting in conf.SETTINGS.items()]
    return "\n".join(["| setting | default | meaning |", "|---|---|---|", *rows])


def test_the_adopting_guide_lists_every_setting_with_its_default_and_meaning() -> None:
    from tests.conftest import BASE_DIR

    doc = (BASE_DIR / "docs" / "adopting.md").read_text()
    table = doc.split("compares it -->\n", 1)[1].split("\n<!-- end of settings table -->", 1)[0]
    assert table == settings_table(), f"update docs/adopting.md's table to:\n{settings_table()}"


@pytest.fixture
def registered_checks() -> Iterator[Callable[..., None]]:
    """Register checks for one test; they are unregistered after it."""
    from django.core.checks.registry import registry

    added: list[Callable[..., Any]] = []

    def add(check: Callable[..., Any], *tags: str) -> None:
        registry.register(check, *tags)
        added.append(check)

    yield add
    for check in added:
        registry.registered_checks.discard(check)


def test_rundaemon_runs_every_check_but_the_web_processs(registered_checks, settings) -> None:
    def project_check(**kwargs: Any) -> list[CheckMessage]:  # a project's own, untagged
        return [Error("the project's own", id="project.E001")]

    def url_check(**kwargs: Any) -> list[CheckMessage]:
        return [Error("a URL check", id="project.E002")]

    def model_check(**kwargs: Any) -> list[CheckMessage]:
        return [Error("a model check", id="project.E003")]

    registered_checks(project_check)
    registered_checks(url_check, Tags.urls)
    registered_checks(model_check, Tags.models)
    settings.DAEMONS_STOP_TIMEOUT = -1
    found = {message.id for message in checks.daemon_check_messages()}
    assert {"project.E001", "project.E003", "daemons.E004"} <= found
    assert "project.E002" not in found

"""On a system without pidfd_open and /proc, the process commands stop with one line; one daemon in the foreground runs.

The facility probe is made to fail in this process (os.pidfd_open removed, the system called Darwin), so the
commands run as they would on a developer's Mac, up to the point where they need what is missing.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError

from daemons import checks

PROCESS_COMMANDS = [
    ["rundaemon", "counter", "--detach"],
    ["rundaemon", "--all"],
    ["rundaemon", "counter", "idle"],
    ["stopdaemon", "counter"],
    ["stopdaemon", "--all"],
    ["daemonstatus"],
    ["signaldaemon", "counter", "wake"],
    ["restartdaemon", "counter"],
]


@pytest.fixture
def not_linux(monkeypatch, settings, tmp_path: Path) -> str:
    """This process without os.pidfd_open, on "Darwin"; the run and log directories are the test's own."""
    monkeypatch.delattr(os, "pidfd_open")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    settings.DAEMONS_RUN_DIR = str(tmp_path / "run")
    settings.DAEMONS_LOG_DIR = str(tmp_path / "log")
    missing = checks.linux_facilities_missing()
    assert missing is not None
    return missing


@pytest.mark.parametrize("args", PROCESS_COMMANDS, ids=" ".join)
def test_a_process_command_fails_with_the_one_line_and_does_nothing(not_linux: str, args: list[str],
                                                                    tmp_path: Path) -> None:
    with pytest.raises(CommandError) as raised:
        call_command(*args)
    assert str(raised.value) == not_linux
    assert raised.value.returncode != 0
    assert not (tmp_path / "run").exists() and not (tmp_path / "log").exists()


def test_from_the_command_line_it_is_one_line_on_stderr_and_exit_status_1(not_linux: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "stopdaemon", "counter"])
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"CommandError: {not_linux}\n"
    assert "stopdaemon" in not_linux and "Darwin" in not_linux


@pytest.mark.django_db
def test_one_daemon_in_the_foreground_for_one_tick_still_runs(not_linux: str, monkeypatch, tmp_path: Path,
                                                              capsys) -> None:
    ticks = tmp_path / "ticks"
    monkeypatch.setenv("TESTAPP_TICKS_FILE", str(ticks))
    call_command("rundaemon", "counter", "--once")
    assert len(ticks.read_text().splitlines()) == 1
    assert capsys.readouterr().out.startswith("counter: counted 1 tick in ")
    assert not (tmp_path / "run" / "counter.pid").exists()


def test_commands_that_only_write_files_need_nothing_of_linux(not_linux: str, capsys) -> None:
    call_command("daemonconfig", "counter", "--systemd", "--project-dir", "/srv/site", "--user", "site",
                 "--group", "site")
    assert "ExecStart=" in capsys.readouterr().out

"""In-process tests of the commands' help and of the daemonstatus table's layout."""
from __future__ import annotations

import argparse
from datetime import timedelta

import pytest
from django.core.management import get_commands, load_command_class
from django.core.management.color import color_style, no_style

from daemons.console.status import DaemonStatus
from daemons.management.commands import _table

# Django's own options (--settings, --verbosity, ...) are documented by Django.
DJANGO_OPTIONS = {"help", "version", "verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color",
                  "skip_checks"}
DAEMON_COMMANDS = sorted(name for name, app in get_commands().items() if app == "daemons")


def test_the_framework_has_its_commands() -> None:
    assert {"rundaemon", "stopdaemon", "restartdaemon", "signaldaemon", "daemonstatus"} <= set(DAEMON_COMMANDS)


@pytest.mark.parametrize("command", DAEMON_COMMANDS)
def test_every_argument_of_every_command_has_help(command: str) -> None:
    parser = load_command_class("daemons", command).create_parser("manage.py", command)
    undocumented = [action.dest for action in parser._actions
                    if action.dest not in DJANGO_OPTIONS and action.help in (None, "", argparse.SUPPRESS)]
    assert not undocumented, f"{command}: no help for {undocumented}"


def row(**fields) -> DaemonStatus:
    from daemons import registry

    return DaemonStatus(**{"name": "counter", "instance": 0, "host": "here", "state": "running", "pid": 42,
                           "interval": registry.get("counter").interval_seconds(), **fields})


def test_a_multi_line_error_or_info_never_splits_a_row(fixed_now) -> None:
    traceback_text = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n  second line\n\n"
    rows = [row(errors=2, last_error=traceback_text, info="line one\nline two"),
            row(name="idle", state="stopped", pid=None, info="database error: could not connect\n\tis it up?")]
    for table in (_table.render(rows, no_style(), fixed_now), _table.cluster_table(rows, fixed_now)):
        lines = table.splitlines()
        assert len(lines) == 3
        assert lines[1].endswith("line one line two; last error: second line")
        assert lines[2].endswith("database error: could not connect is it up?")


def test_a_long_info_is_cut_with_an_ellipsis(fixed_now) -> None:
    line = _table.render([row(info="x" * 1000)], no_style(), fixed_now).splitlines()[1]
    assert line.endswith("x" * (_table.INFO_WIDTH - 1) + "…")


def test_first_interval_says_starting_then_never(fixed_now) -> None:
    # The test daemons' interval is TESTAPP_INTERVAL (5 s unless set): one heartbeat period within 1..30 s.
    from daemons import registry
    from daemons.cluster.heartbeat import heartbeat_period

    interval = registry.get("counter").interval_seconds()
    period = max(interval, heartbeat_period(interval))
    young = row(started_at=fixed_now - timedelta(seconds=period / 2))
    old = row(started_at=fixed_now - timedelta(seconds=period + 1))
    assert young.last_tick_label(fixed_now) == "starting"
    assert old.last_tick_label(fixed_now) == "never"
    assert row(state="stopped", started_at=young.started_at).last_tick_label(fixed_now) == "never"
    ticked = row(started_at=young.started_at, last_tick_at=fixed_now - timedelta(seconds=90))
    assert ticked.last_tick_label(fixed_now) == "1m30s ago"


def test_states_are_coloured_and_padding_stays_outside_the_colour(fixed_now) -> None:
    style = color_style(force_color=True)
    lines = _table.render([row(), row(name="slow", state="hung"), row(name="idle", state="stale")], style,
                          fixed_now).splitlines()
    assert style.SUCCESS("running       ") in lines[1]
    assert style.ERROR("hung          ") in lines[2]
    assert style.WARNING("stale PID file") in lines[3]

"""daemonshell: Django's shell with the daemon object and a tick() at hand."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.process


def test_the_shell_has_the_daemon_and_runs_a_real_tick(project) -> None:
    ticks = project.tmp / "ticks.txt"
    result = project.manage("daemonshell", "counter", "-c",
                            "r = tick(); print(type(daemon).__name__, daemon.name, r.processed, daemon.status())",
                            env={"TESTAPP_TICKS_FILE": str(ticks)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "CounterDaemon counter 1 counting"
    assert len(ticks.read_text().splitlines()) == 1


def test_an_unknown_daemon_is_one_clear_line(project) -> None:
    result = project.manage("daemonshell", "nope", "-c", "print(1)")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("CommandError: unknown daemon 'nope'; registered daemons: ")


def test_every_command_validates_the_instance_the_same_way(project) -> None:
    for command in (["daemonshell", "counter", "-c", "print(1)"], ["rundaemon", "counter", "--once"],
                    ["stopdaemon", "counter"]):
        result = project.manage(*command, "--instance", "1000")
        assert result.returncode == 2, command
        assert "instance must be between 0 and 999, got 1000" in result.stderr

"""`manage.py restartdaemon NAME [NAME...] | --all [--instance N] [--timeout S] [--kill]`: stop, then start again."""
from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError

from daemons.console import operations
from daemons.console.operations import ControlError
from daemons.console.stopping import StopError
from daemons.process import supervision
from daemons.process.exits import Exit
from daemons.process.lifecycle import StartupError
from daemons.process.privileges import Credentials, PrivilegeError

from ._base import DaemonCommand


class Command(DaemonCommand):
    help = ("Stop a daemon as stopdaemon does, then start it again detached; report the old and new PIDs. "
            "A daemon the supervisor runs is restarted by the supervisor, as its child. A daemon that was not "
            "running is started. --all restarts the supervisor with all its daemons.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser, many=True)
        parser.add_argument("--all", action="store_true", dest="every",
                            help="restart the supervisor and every daemon it runs (a deploy of new code)")
        self.add_instance_argument(parser)
        self.add_stop_arguments(parser)
        self.add_credentials_arguments(parser)

    def handle(self, *args: Any, names: list[str], every: bool, instance: int, timeout: float | None, kill: bool,
               user: str | None, group: str | None, **options: Any) -> None:
        if every == bool(names):
            raise CommandError("give daemon NAMEs or --all, not both" if every else "give a daemon's NAME or --all",
                               returncode=Exit.USAGE)
        if every:
            self.restart_supervisor(timeout, kill)
            return
        for name in names:
            self.restart(name, instance, timeout, kill, user, group)

    def restart(self, name: str, instance: int, timeout: float | None, kill: bool, user: str | None,
                group: str | None) -> None:
        daemon_cls = self.daemon_class(name)
        label = operations.label(name, instance)
        try:
            done = operations.restart(daemon_cls, instance=instance, timeout=timeout, kill=kill,
                                      credentials=Credentials.resolve(user, group))
        except (ControlError, StartupError, PrivilegeError, StopError) as exc:
            raise self.fail(label, str(exc)) from None
        if done.old_pid is None:
            self.stdout.write(f"{label} was not running; started (pid {done.new_pid}); log: {done.log}")
        else:
            how = "killed" if done.killed else "stopped"
            self.stdout.write(f"{label} restarted: pid {done.old_pid} {how}, pid {done.new_pid} started; "
                              f"log: {done.log}")

    def restart_supervisor(self, timeout: float | None, kill: bool) -> None:
        try:
            stopped, started = operations.restart_supervisor(timeout=timeout, kill=kill)
        except (ControlError, StartupError, StopError) as exc:
            raise self.fail(supervision.NAME, str(exc)) from None
        old = stopped.outcome.pid if stopped.outcome is not None else None
        self.stdout.write(f"{supervision.NAME} restarted: pid {old} stopped, pid {started.pid} started with "
                          f"{', '.join(started.started) or 'none'}; log: {started.log}")
        problems = [f"{label}: {why}" for label, why in started.failed.items()]
        if stopped.killed:
            problems.insert(0, f"had to kill {', '.join(stopped.killed)}")
        if problems:
            raise CommandError("; ".join(problems))

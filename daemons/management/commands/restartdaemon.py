"""`manage.py restartdaemon NAME [--instance N] [--timeout S] [--kill]`: stop, then start again detached."""
from __future__ import annotations

import argparse

from daemons import operations
from daemons.lifecycle import StartupError
from daemons.operations import ControlError
from daemons.privileges import Credentials, PrivilegeError

from ._base import DaemonCommand


class Command(DaemonCommand):
    help = ("Stop a daemon as stopdaemon does, then start it again detached; report the old and new PIDs. "
            "A daemon that was not running is started.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser)
        self.add_instance_argument(parser)
        self.add_stop_arguments(parser)
        self.add_credentials_arguments(parser)

    def handle(self, *args, name: str, instance: int, timeout: float | None, kill: bool, user: str | None,
               group: str | None, **options) -> None:
        daemon_cls = self.daemon_class(name)
        label = operations.label(name, instance)
        try:
            done = operations.restart(daemon_cls, instance=instance, timeout=timeout, kill=kill,
                                   credentials=Credentials.resolve(user, group))
        except (ControlError, StartupError, PrivilegeError) as exc:
            raise self.fail(label, str(exc)) from None
        if done.old_pid is None:
            self.stdout.write(f"{label} was not running; started (pid {done.new_pid}); log: {done.log}")
        else:
            how = "killed" if done.killed else "stopped"
            self.stdout.write(f"{label} restarted: pid {done.old_pid} {how}, pid {done.new_pid} started; "
                              f"log: {done.log}")

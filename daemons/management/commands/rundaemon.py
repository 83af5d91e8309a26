"""`manage.py rundaemon NAME [--detach] [--once]`: a thin shell over `daemons.process`."""
from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError

from daemons import registry
from daemons.pidfile import PidFileError
from daemons.process import Credentials, RunPaths, StartupError, run_detached, run_foreground
from daemons.supervisor import supervise


def instance_type(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"instance must be a whole number, got {value!r}") from None
    if not 0 <= number <= 999:
        raise argparse.ArgumentTypeError(f"instance must be between 0 and 999, got {number}")
    return number


class Command(BaseCommand):
    help = "Run a registered daemon in the foreground (default), detached, or for one tick."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME",
                            help="the daemon's registered name; several run under one supervisor")
        parser.add_argument("--all", dest="all_daemons", action="store_true",
                            help="run every registered daemon under one supervisor")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--detach", action="store_true", help="daemonize; return once it is up")
        mode.add_argument("--once", action="store_true", help="run one tick and exit")
        parser.add_argument("--instance", type=instance_type, default=0,
                            help="instance number, to run several copies on one host (default 0)")
        parser.add_argument("--user", help="when started as root, run as this user")
        parser.add_argument("--group", help="when started as root, run with this group")

    def handle(self, *args, names: list[str], all_daemons: bool, detach: bool, once: bool, instance: int,
               user: str | None, group: str | None, **options) -> None:
        if all_daemons or len(names) != 1:
            self.stdout.write(supervise(names, every=all_daemons, detach=detach, once=once, instance=instance,
                                        user=user, group=group))
            return
        name = names[0]
        try:
            daemon_cls = registry.get(name)
        except registry.UnknownDaemon as exc:
            raise CommandError(str(exc)) from None
        paths = RunPaths.for_daemon(name, instance)
        try:
            credentials = Credentials.resolve(user, group)
            if detach:
                pid = run_detached(daemon_cls, paths=paths, instance=instance, credentials=credentials)
                self.stdout.write(f"{name} started (pid {pid}); log: {paths.log}")
                return
            code = run_foreground(daemon_cls, paths=paths, once=once, instance=instance, credentials=credentials)
        except (PidFileError, StartupError) as exc:
            raise CommandError(f"{name}: {exc}") from None
        if code:
            raise CommandError(f"{name} exited with status {code}; see its log", returncode=code)

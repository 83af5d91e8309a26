"""`manage.py rundaemon NAME [--detach] [--once]`: a thin shell over `daemons.lifecycle`."""
from __future__ import annotations

import argparse

from daemons.lifecycle import Lifecycle, StartupError
from daemons.privileges import Credentials, PrivilegeError
from daemons.supervisor import supervise

from ._base import DaemonCommand


class Command(DaemonCommand):
    help = "Run a registered daemon in the foreground (default), detached, or for one tick."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME",
                            help="the daemon's registered name; several run under one supervisor")
        parser.add_argument("--all", dest="all_daemons", action="store_true",
                            help="run every registered daemon under one supervisor")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--detach", action="store_true", help="daemonize; return once it is up")
        mode.add_argument("--once", action="store_true", help="run one tick and exit; non-zero if the tick raised")
        self.add_instance_argument(parser)
        parser.add_argument("--user", help="when started as root, run as this user")
        parser.add_argument("--group", help="when started as root, run with this group")

    def handle(self, *args, names: list[str], all_daemons: bool, detach: bool, once: bool, instance: int,
               user: str | None, group: str | None, **options) -> None:
        if all_daemons or len(names) != 1:
            self.stdout.write(supervise(names, every=all_daemons, detach=detach, once=once, instance=instance,
                                        user=user, group=group))
            return
        name = names[0]
        daemon_cls = self.daemon_class(name)
        try:
            lifecycle = Lifecycle(daemon_cls, instance=instance, detach=detach, once=once,
                                  credentials=Credentials.resolve(user, group))
            code = lifecycle.run()
        except (StartupError, PrivilegeError) as exc:
            raise self.fail(name, str(exc)) from None
        if detach:
            self.stdout.write(f"{name} started (pid {lifecycle.pid}); log: {lifecycle.paths.log}")
            return
        if once and lifecycle.last_result_line:
            if code:
                raise self.fail(name, lifecycle.last_result_line, returncode=code)
            self.stdout.write(f"{name}: {lifecycle.last_result_line}")
        if code:
            raise self.fail(name, f"exited with status {code}; see its log", returncode=code)

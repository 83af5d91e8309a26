"""`manage.py rundaemon NAME [--detach | --once | --reload]`: a thin shell over `daemons.process.lifecycle`."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from django.core.management.base import CommandError

from daemons import registry
from daemons.daemon import Daemon
from daemons.process import supervision
from daemons.process.exits import Exit
from daemons.process.lifecycle import Lifecycle, StartupError
from daemons.process.privileges import Credentials, PrivilegeError

from ._base import DaemonCommand, registered_names

if TYPE_CHECKING:
    from daemons.console.operations import SupervisorStarted
    from daemons.process.children import ChildSpec


def supervised(names: list[str], all_daemons: bool) -> bool:
    """Whether these arguments run daemons under a supervisor (--all, several NAMEs or none) rather than one."""
    return all_daemons or len(names) != 1


class Command(DaemonCommand):
    help = "Run a registered daemon in the foreground (default), detached, or for one tick."
    # A daemon runs none of the web process's code, and what a check imports it keeps for life (about 1 MiB):
    # Django's URL, template, static-file, admin, security and commands checks are left out. The framework's
    # checks (daemons/checks.py), the models' and the project's own still stop a misconfigured daemon.
    daemon_checks_only = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME",
                            help=f"the daemon's registered name: {registered_names()}; "
                                 "several run under one supervisor")
        parser.add_argument("--all", dest="all_daemons", action="store_true",
                            help="run every registered daemon under one supervisor")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--detach", action="store_true",
                          help="daemonize; return once it is up (exit 0 if it already runs)")
        mode.add_argument("--once", action="store_true", help="run one tick and exit; non-zero if the tick raised")
        mode.add_argument("--reload", action="store_true",
                          help="development only: run in the foreground and restart when the code changes")
        self.add_instance_argument(parser)
        self.add_credentials_arguments(parser)

    def needs_linux(self, options: dict[str, Any]) -> bool:
        # One daemon in the foreground (--once, --reload included) runs anywhere; detaching and supervising don't.
        return options["detach"] or supervised(options["names"], options["all_daemons"])

    def handle(self, *args: Any, names: list[str], all_daemons: bool, detach: bool, once: bool, reload: bool,
               instance: int, user: str | None, group: str | None, **options: Any) -> None:
        if supervised(names, all_daemons):
            if reload:
                raise CommandError("--reload runs one daemon; give exactly one NAME", returncode=Exit.USAGE)
            self.supervise(names, every=all_daemons, detach=detach, single=bool(once or instance or user or group))
            return
        name = names[0]
        daemon_cls = self.daemon_class(name)
        try:
            credentials = Credentials.resolve(user, group)
            if detach:
                self.start_detached(daemon_cls, instance, credentials)
                return
            lifecycle = Lifecycle.for_daemon(daemon_cls, instance=instance, once=once, credentials=credentials)
            if reload:
                code = self.run_reloading(lifecycle)
            else:
                code = lifecycle.run()
        except (StartupError, PrivilegeError) as exc:
            raise self.fail(name, str(exc)) from None
        result_line = getattr(lifecycle.service, "last_result_line", "")
        if once and result_line:
            if code:
                raise self.fail(name, result_line, returncode=code)
            self.stdout.write(f"{name}: {result_line}")
        if code:
            raise self.fail(name, f"exited with status {code}; see its log", returncode=code)

    def start_detached(self, daemon_cls: type[Daemon], instance: int, credentials: Credentials | None) -> None:
        from daemons.console import operations  # the operator's verbs: a foreground daemon needs none of them

        started = operations.start(daemon_cls, instance=instance, credentials=credentials)
        label = operations.label(daemon_cls.name, instance)
        if started.already_running:
            self.stdout.write(f"{label} already running (pid {started.pid})")
        elif started.supervised:
            self.stdout.write(f"{label} started by the supervisor (pid {started.pid}); log: {started.log}")
        else:
            self.stdout.write(f"{label} started (pid {started.pid}); log: {started.log}")

    def run_reloading(self, lifecycle: Lifecycle) -> int:
        """Run under `daemons.process.reload`; the child ends here with its own status (3 asks for a new one)."""
        from daemons.process import reload  # development only: Django's autoreloader stays out of the other paths

        code = reload.run_with_reloader(lifecycle.run)
        if reload.is_child():
            sys.exit(code)
        return code

    def supervise(self, names: list[str], *, every: bool, detach: bool, single: bool) -> None:
        """`rundaemon --all` and `rundaemon NAME1 NAME2 ...`: the daemons not running yet, under one supervisor."""
        from daemons.console import operations

        specs = self.supervised_specs(names, every=every, single=single)
        try:
            done = operations.start_supervisor(specs, detach=detach)
        except StartupError as exc:
            raise self.fail(supervision.NAME, str(exc)) from None
        self.report_supervised(done, detach=detach)

    def supervised_specs(self, names: list[str], *, every: bool, single: bool) -> list[ChildSpec]:
        from daemons.process import children  # the supervisor's path only

        if every and names:
            raise CommandError("give daemon names or --all, not both", returncode=Exit.USAGE)
        if not every and not names:
            raise CommandError("name a daemon, several daemons, or use --all", returncode=Exit.USAGE)
        if single:
            raise CommandError("--once, --instance, --user and --group work with a single daemon only",
                               returncode=Exit.USAGE)
        try:
            specs = children.child_specs(names or None)
        except registry.UnknownDaemon as exc:
            raise CommandError(str(exc)) from None
        if not specs:
            raise CommandError("no daemons are registered")
        return specs

    def report_supervised(self, done: SupervisorStarted, *, detach: bool) -> None:
        for label, pid in done.left_alone.items():
            self.stdout.write(f"{label} already running (pid {pid}); left alone")
        if done.pid is None:
            self.stdout.write("everything is already running")
        elif done.already_running:
            started = f"; started {', '.join(done.started)}" if done.started else ""
            self.stdout.write(f"{supervision.NAME} already running (pid {done.pid}){started}")
        elif detach:
            self.stdout.write(f"{supervision.NAME} started (pid {done.pid}) with {', '.join(done.started) or 'none'}"
                              f"; log: {done.log}")
        else:
            self.stdout.write(f"{supervision.NAME} stopped")
        if done.failed:
            failures = "; ".join(f"{label}: {why}" for label, why in done.failed.items())
            raise CommandError(f"{supervision.NAME} (pid {done.pid}) runs the others, but {failures}")

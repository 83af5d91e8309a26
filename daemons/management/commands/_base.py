"""What every daemon command shares: NAME and --instance, the lookup and its errors, usage errors (exit 2),
the kit's --version, -v as the log level, NO_COLOR, the Linux check."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from django.core.checks import CheckMessage
from django.core.management.base import BaseCommand, CommandError, SystemCheckError

import daemons
from daemons import checks, registry
from daemons.daemon import Daemon
from daemons.process import logs

MAX_INSTANCE = 999
MAX_SECONDS = 3600.0
# A command line the command can't act on: as argparse exits for an unknown option or a bad value.
USAGE_ERROR = 2


def usage_error(message: str) -> CommandError:
    """The one-line error of options that don't go together (or are missing): exit status 2, as argparse's."""
    return CommandError(message, returncode=USAGE_ERROR)


def instance_type(value: str) -> int:
    """An --instance value: a whole number from 0 to 999."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"instance must be a whole number, got {value!r}") from None
    if not 0 <= number <= MAX_INSTANCE:
        raise argparse.ArgumentTypeError(f"instance must be between 0 and {MAX_INSTANCE}, got {number}")
    return number


def seconds_type(what: str) -> Callable[[str], float]:
    """An argparse type for `what` (e.g. "timeout"): seconds above 0 and at most an hour."""

    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number of seconds, got {value!r}") from None
        if not 0 < seconds <= MAX_SECONDS:
            raise argparse.ArgumentTypeError(
                f"{what} must be more than 0 and at most {MAX_SECONDS:g} seconds, got {value}")
        return seconds

    return parse


def registered_names() -> str:
    return ", ".join(registry.names()) or "none"


class DaemonCommandMixin:
    """Arguments and lookup for commands about registered daemons; mix into a BaseCommand."""

    def get_version(self) -> str:
        """`--version` prints the kit's version (from the installed package), not Django's."""
        return daemons.__version__

    def add_name_argument(self, parser: argparse.ArgumentParser, *, many: bool = False,
                          required: bool = True) -> None:
        if many:
            parser.add_argument("names", nargs="*", metavar="NAME",
                                help=f"registered daemon names (default: all): {registered_names()}")
        else:
            parser.add_argument("name", nargs=None if required else "?", metavar="NAME",
                                help=f"the daemon's registered name: {registered_names()}")

    def add_instance_argument(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--instance", type=instance_type, default=0,
                            help=f"instance number, to run several copies on one host (0 to {MAX_INSTANCE}, default 0)")

    def add_credentials_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user", help="when started as root, run as this user")
        parser.add_argument("--group", help="when started as root, run with this group")

    def add_stop_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--timeout", type=seconds_type("timeout"), default=None,
                            help="seconds to wait for it to stop (default: DAEMONS_STOP_TIMEOUT plus 2)")
        parser.add_argument("--kill", action="store_true", help="send SIGKILL if it has not stopped by then")

    def daemon_class(self, name: str) -> type[Daemon]:
        """The daemon registered as `name`; CommandError listing the registered daemons if none is."""
        try:
            return registry.get(name)
        except registry.UnknownDaemon as exc:
            raise CommandError(str(exc)) from None

    def fail(self, name: str, message: str, returncode: int = 1) -> CommandError:
        """The one-line error of a command about daemon `name`: `NAME: message`."""
        return CommandError(f"{name}: {message}", returncode=returncode)


class DaemonCommand(DaemonCommandMixin, BaseCommand):
    """A management command about one or more registered daemons.

    Such a command controls or inspects daemon processes, which takes Linux (pidfd_open, /proc): elsewhere it
    stops with one line saying so. A command that works anywhere sets `requires_linux = False`.
    """

    requires_linux: bool = True
    # True: Django's checks of the web process are left out (`checks.daemon_check_messages`).
    daemon_checks_only: bool = False

    def needs_linux(self, options: dict[str, Any]) -> bool:
        """Whether this run of the command, with these options, needs the Linux facilities."""
        return self.requires_linux

    def check(self, *args: Any, **kwargs: Any) -> None:
        """Django's system checks; the kit's own errors (a run or log directory that can't be written, a bad
        setting) come out as one line, as every other error of these commands does."""
        try:
            if self.daemon_checks_only:
                self.report_checks(checks.daemon_check_messages())
            else:
                super().check(*args, **kwargs)
        except SystemCheckError:
            ours = [problem for problem in checks.check_daemon_settings() if problem.is_serious()]
            if not ours:
                raise
            raise CommandError("; ".join(f"{problem.msg} ({problem.id})" for problem in ours)) from None

    def report_checks(self, messages: list[CheckMessage]) -> None:
        """Report check messages as Django's `check` does: errors stop the command, warnings go to stderr."""
        shown = [message for message in messages if not message.is_silenced()]
        groups = [(title, sorted(str(m) for m in shown if m.is_serious() == serious))
                  for title, serious in (("ERRORS", True), ("WARNINGS", False))]
        text = "System check identified some issues:\n" + "".join(
            f"\n{title}:\n" + "\n".join(lines) + "\n" for title, lines in groups if lines)
        if any(message.is_serious() for message in shown):
            raise SystemCheckError(text)
        if shown:
            self.stderr.write(text)

    def execute(self, *args: Any, **options: Any) -> Any:
        if self.needs_linux(options) and (missing := checks.linux_facilities_missing()):
            raise CommandError(missing)
        logs.set_verbosity(options.get("verbosity", 1))
        # https://no-color.org: a non-empty NO_COLOR turns colour off unless --force-color asks for it.
        if os.environ.get("NO_COLOR") and not options.get("force_color"):
            options["no_color"] = True
        return super().execute(*args, **options)

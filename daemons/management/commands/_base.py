"""What every daemon command shares: the NAME and --instance arguments, the lookup and its errors."""
from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError

from daemons import registry
from daemons.base import Daemon

MAX_INSTANCE = 999


def instance_type(value: str) -> int:
    """An --instance value: a whole number from 0 to 999."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"instance must be a whole number, got {value!r}") from None
    if not 0 <= number <= MAX_INSTANCE:
        raise argparse.ArgumentTypeError(f"instance must be between 0 and {MAX_INSTANCE}, got {number}")
    return number


class DaemonCommandMixin:
    """Arguments and lookup for commands about registered daemons; mix into a BaseCommand."""

    def add_name_argument(self, parser: argparse.ArgumentParser, *, many: bool = False) -> None:
        if many:
            parser.add_argument("names", nargs="*", metavar="NAME", help="registered daemon names (default: all)")
        else:
            parser.add_argument("name", help="the daemon's registered name")

    def add_instance_argument(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--instance", type=instance_type, default=0,
                            help=f"instance number, to run several copies on one host (0 to {MAX_INSTANCE}, default 0)")

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
    """A management command about one or more registered daemons."""

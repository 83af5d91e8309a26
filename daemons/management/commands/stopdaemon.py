"""`manage.py stopdaemon NAME [--timeout S] [--kill]`: stop the daemon that holds the lock."""
from __future__ import annotations

import argparse

from django.core.management.base import CommandError

from daemons.paths import RunPaths
from daemons.stopping import stop
from daemons.supervisor import stop_all_command

from ._base import DaemonCommand


def timeout_type(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout must be a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"timeout must be between 0 and 3600 seconds, got {value}")
    return seconds


class Command(DaemonCommand):
    help = "Send SIGTERM to a running daemon and wait for it to stop."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", nargs="?", help="the daemon's registered name")
        parser.add_argument("--all", dest="all_daemons", action="store_true",
                            help="stop the supervisor, its daemons and every other registered daemon")
        parser.add_argument("--timeout", type=timeout_type, default=10.0, help="seconds to wait (default 10)")
        parser.add_argument("--kill", action="store_true", help="send SIGKILL if it has not stopped by then")
        self.add_instance_argument(parser)

    def handle(self, *args, name: str | None, all_daemons: bool, timeout: float, kill: bool, instance: int,
               **options) -> None:
        if all_daemons or name is None:
            self.stdout.write(stop_all_command(name, every=all_daemons, timeout=timeout, kill=kill))
            return
        self.daemon_class(name)
        outcome = stop(RunPaths.for_daemon(name, instance).pid, timeout=timeout, kill=kill)
        if outcome.state == "not_running":
            extra = f" (stale PID file names pid {outcome.stale_pid}; not signalled)" if outcome.stale_pid else ""
            self.stdout.write(f"{name} is not running{extra}")
        elif outcome.state == "stopped":
            self.stdout.write(f"{name} stopped (pid {outcome.pid})")
        elif outcome.state == "killed":
            self.stdout.write(f"{name} did not stop within {timeout:g}s; killed (pid {outcome.pid})")
        else:
            raise CommandError(f"{name} (pid {outcome.pid}) did not stop within {timeout:g}s; try --kill")

"""`manage.py signaldaemon NAME {reopen-logs,toggle-debug,wake} [--instance N]`: ask a running daemon to act."""
from __future__ import annotations

import argparse
from typing import Any

from daemons.console import operations
from daemons.console.operations import ControlError
from daemons.console.stopping import StopError

from ._base import DaemonCommand

ACTION_HELP = {
    "reopen-logs": "reopen the log file (SIGHUP), after logrotate moved it",
    "toggle-debug": "switch the daemon's loggers between INFO and DEBUG (SIGUSR1)",
    "wake": "tick now instead of at the end of the interval",
}


class Command(DaemonCommand):
    help = ("Ask a running daemon to reopen its log, toggle DEBUG logging or tick now. Only the process holding "
            "the PID file's lock is signalled, never a PID left in a stale file.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser)
        parser.add_argument("action", choices=list(operations.ACTIONS),
                            help="; ".join(f"{action}: {ACTION_HELP[action]}" for action in operations.ACTIONS))
        self.add_instance_argument(parser)

    def handle(self, *args: Any, name: str, action: str, instance: int, **options: Any) -> None:
        self.daemon_class(name)
        label = operations.label(name, instance)
        try:
            pid = operations.signal_daemon(name, instance, action)
        except (ControlError, StopError) as exc:
            raise self.fail(label, str(exc)) from None
        if pid is None:
            raise self.fail(label, f"not running; nothing to {action}", returncode=3)
        self.stdout.write(f"{label}: sent {action} (pid {pid})")

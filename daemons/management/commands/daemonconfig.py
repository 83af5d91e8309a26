"""`manage.py daemonconfig NAME --systemd | --supervisor | --logrotate`: print a service-manager file."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemons.console import deployment

from ._base import DaemonCommand, usage_error


def seconds_type(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {value!r}") from None
    if not 1 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"expected 1 to 86400 seconds, got {seconds}")
    return seconds


def absolute_path_type(value: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise argparse.ArgumentTypeError(f"must be an absolute path, got {value}")
    return path


KIND_HELP = {
    "systemd": "print a systemd unit (Type=notify, foreground)",
    "supervisor": "print a supervisord program section (foreground)",
    "logrotate": "print a logrotate stanza for the detached daemon's log",
}


class Command(DaemonCommand):
    requires_linux = False  # it only prints files
    help = "Print a systemd unit, a supervisord program section or a logrotate stanza for a daemon."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", nargs="?", help="the daemon's registered name")
        parser.add_argument("--all", dest="all_daemons", action="store_true",
                            help="the files for `rundaemon --all`: one supervisor running every daemon")
        kind = parser.add_mutually_exclusive_group(required=True)
        for option in deployment.RENDERERS:
            kind.add_argument(f"--{option}", dest="kind", action="store_const", const=option, help=KIND_HELP[option])
        parser.add_argument("--project-dir", type=absolute_path_type,
                            help="the project on the server, an absolute path (default: this one)")
        parser.add_argument("--python", type=Path,
                            help="the interpreter (default: the one running this command, moved under PROJECT_DIR "
                                 "when it lies in this project)")
        parser.add_argument("--user", help="run as this user (default: the owner of the project directory)")
        parser.add_argument("--group", help="run as this group (default: the user's primary group)")
        parser.add_argument("--env-file", type=Path, help="environment file (default: PROJECT_DIR/.env)")
        parser.add_argument("--watchdog", type=seconds_type, help="systemd WatchdogSec (default: 3 intervals, >= 30)")

    def handle(self, *args: Any, name: str | None, all_daemons: bool, kind: str, project_dir: Path | None,
               python: Path | None, user: str | None, group: str | None, env_file: Path | None, watchdog: int | None,
               **options: Any) -> None:
        where: dict[str, Any] = dict(project_dir=project_dir, python=python, user=user, group=group, env_file=env_file,
                     watchdog_seconds=watchdog)
        if all_daemons and name is not None:
            raise usage_error("give a daemon name or --all, not both")
        if all_daemons:
            d = deployment.supervisor_deployment(**where)
        elif name is None:
            raise usage_error("name a daemon, or use --all")
        else:
            d = deployment.deployment_for(self.daemon_class(name), **where)
        self.stdout.write(deployment.RENDERERS[kind](d), ending="")

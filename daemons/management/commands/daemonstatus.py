"""`manage.py daemonstatus [NAME ... | --all] [--json | --watch [SECONDS]]`: state, pid, uptime, memory, last tick."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from daemons.console.status import DaemonStatus, cluster_statuses, read_statuses, worst_exit_code

from . import _table
from ._base import DaemonCommand, seconds_type

WATCH_EVERY = 2.0  # seconds, as `watch` redraws
CLEAR_SCREEN = "\033[H\033[2J"


class Command(DaemonCommand):
    help = ("Report each daemon's state. Exit with the worst state's code: 4 if one is hung, else 1 on a stale "
            "PID file, else 3 if one is not running, 0 if all run.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser, many=True)
        parser.add_argument("--all", action="store_true", dest="every",
                            help="every instance of every registered daemon on this host (the default without NAME)")
        parser.add_argument("--all-hosts", action="store_true",
                            help="every instance on every host, from the heartbeat rows (dead: no heartbeat for "
                                 "three heartbeat periods)")
        view = parser.add_mutually_exclusive_group()
        view.add_argument("--json", action="store_true", help="print a JSON list for monitoring")
        view.add_argument("--watch", nargs="?", type=seconds_type("watch interval"), const=WATCH_EVERY, default=None,
                          metavar="SECONDS",
                          help=f"redraw the table every SECONDS (default {WATCH_EVERY:g}) until Ctrl-C")

    def handle(self, *args: Any, names: list[str], every: bool, json: bool, watch: float | None,
               all_hosts: bool = False, **options: Any) -> None:
        if every and names:
            raise CommandError("give daemon NAMEs or --all, not both", returncode=2)
        for name in names:
            self.daemon_class(name)
        if watch is not None:
            self.watch(names, watch)
            return
        try:
            rows = cluster_statuses(names) if all_hosts else self.rows(names)
        except DatabaseError as exc:  # read_statuses notes its own; the cluster view is nothing without rows
            raise CommandError(f"cannot read the heartbeat rows: {exc}".strip()) from None
        if json:
            self.stdout.write(_json_dumps([row.as_json() for row in rows]))
        elif all_hosts:
            self.stdout.write(_table.cluster_table(rows, timezone.now()))
        else:
            self.stdout.write(_table.render(rows, self.style, timezone.now()))
        code = worst_exit_code(rows)
        if code:
            sys.exit(code)

    def rows(self, names: list[str]) -> list[DaemonStatus]:
        return read_statuses(names)

    def watch(self, names: list[str], every: float) -> None:
        """Redraw the table every `every` seconds, like `watch`, until Ctrl-C (which is a normal end)."""
        try:
            while True:
                close_old_connections()  # a database that came back is used again at the next redraw
                now = timezone.now()
                table = _table.render(self.rows(names), self.style, now)
                if self.stdout.isatty():
                    self.stdout.write(CLEAR_SCREEN, ending="")
                header = f"Every {every:g}s: daemonstatus    {now.astimezone():%Y-%m-%d %H:%M:%S}"
                self.stdout.write(f"{header}\n\n{table}\n")
                self.stdout.flush()
                time.sleep(every)
        except KeyboardInterrupt:
            self.stdout.write("")


def _json_dumps(data: object) -> str:
    return json.dumps(data, indent=2)

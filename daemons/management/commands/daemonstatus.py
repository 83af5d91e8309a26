"""`manage.py daemonstatus [NAME ...] [--json]`: state, pid, uptime, memory and last tick."""
from __future__ import annotations

import argparse
import json
import sys

from django.core.management.base import CommandError
from django.db import DatabaseError
from django.utils import timezone

from daemons.status import cluster_statuses, cluster_table, format_duration, read_statuses, worst_exit_code

from ._base import DaemonCommand


class Command(DaemonCommand):
    help = ("Report each daemon's state. Exit with the worst state's code: 4 if one is hung, else 1 on a stale "
            "PID file, else 3 if one is not running, 0 if all run.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser, many=True)
        parser.add_argument("--json", action="store_true", help="print a JSON list for monitoring")
        parser.add_argument("--all-hosts", action="store_true",
                            help="every instance on every host, from the heartbeat rows (dead: no heartbeat for "
                                 "three heartbeat periods)")

    def handle(self, *args, names: list[str], json: bool, all_hosts: bool = False, **options) -> None:
        for name in names:
            self.daemon_class(name)
        try:
            rows = cluster_statuses(names) if all_hosts else read_statuses(names)
        except DatabaseError as exc:  # read_statuses notes its own; the cluster view is nothing without rows
            raise CommandError(f"cannot read the heartbeat rows: {exc}".strip()) from None
        if json:
            self.stdout.write(_json_dumps([row.as_json() for row in rows]))
        else:
            self.stdout.write(cluster_table(rows, timezone.now()) if all_hosts else self.table(rows))
        code = worst_exit_code(rows)
        if code:
            sys.exit(code)

    def table(self, rows) -> str:
        now = timezone.now()
        lines = [f"{'NAME':<16} {'STATE':<14} {'PID':>7} {'UPTIME':>8} {'RSS':>8} {'LAST TICK':>10} "
                 f"{'DONE':>7} {'ERRORS':>6}  INFO"]
        for row in rows:
            label = row.name if not row.instance else f"{row.name}.{row.instance}"
            rss = f"{row.rss_kib / 1024:.1f}M" if row.rss_kib else "-"
            last = row.last_tick_label(now)
            state = {"stale": "stale PID file"}.get(row.state, row.state)
            lines.append(
                f"{label:<16} {state:<14} {row.pid or '-':>7} {format_duration(row.uptime_seconds):>8} "
                f"{rss:>8} {last:>10} {row.processed:>7} {row.errors:>6}  {row.info}"
            )
            if row.last_error and row.errors:
                lines.append(f"{'':<16} last error: {row.last_error.splitlines()[-1][:200]}")
        return "\n".join(lines)


def _json_dumps(data: object) -> str:
    return json.dumps(data, indent=2)

"""`manage.py daemonstatus [NAME ...] [--json]`: state, pid, uptime, memory and last tick."""
from __future__ import annotations

import argparse
import json
import sys

from django.utils import timezone

from daemons import registry
from daemons.paths import instances
from daemons.status import EXIT_RUNNING, EXIT_STALE, EXIT_STOPPED, EXIT_UNKNOWN, format_duration, read_status

from ._base import DaemonCommand


class Command(DaemonCommand):
    help = ("Report each daemon's state. Exit 0 if all are running, 1 on a stale PID file, 3 if one is not "
            "running, 4 if one is hung.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser, many=True)
        parser.add_argument("--json", action="store_true", help="print a JSON list for monitoring")

    def handle(self, *args, names: list[str], json: bool, **options) -> None:
        for name in names:
            self.daemon_class(name)
        rows = [read_status(name, i) for name in (names or registry.names()) for i in instances(name)]
        if json:
            self.stdout.write(_json_dumps([row.as_json() for row in rows]))
        else:
            self.stdout.write(self.table(rows))
        codes = {row.exit_code for row in rows}
        code = max(codes, key=[EXIT_RUNNING, EXIT_UNKNOWN, EXIT_STALE, EXIT_STOPPED].index)
        if code:
            sys.exit(code)

    def table(self, rows) -> str:
        now = timezone.now()
        lines = [f"{'NAME':<16} {'STATE':<14} {'PID':>7} {'UPTIME':>8} {'RSS':>8} {'LAST TICK':>10} "
                 f"{'DONE':>7} {'ERRORS':>6}  INFO"]
        for row in rows:
            label = row.name if not row.instance else f"{row.name}.{row.instance}"
            rss = f"{row.rss_kib / 1024:.1f}M" if row.rss_kib else "-"
            last = f"{format_duration((now - row.last_tick_at).total_seconds())} ago" if row.last_tick_at else "never"
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

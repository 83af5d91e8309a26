"""The `daemonstatus` tables, this host's and (`--all-hosts`) every host's: one line per instance."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.core.management.color import Style

from daemons.console import operations
from daemons.console.status import DaemonStatus
from daemons.process.exits import State
from daemons.scheduling.schedule import format_duration

INFO_WIDTH = 160
STATE_LABELS = {State.STALE: "stale PID file"}


def state_style(style: Style, state: State) -> Callable[[str], str]:
    """The colour of a state: green running, red hung, yellow stale PID file, plain red stopped."""
    return {State.RUNNING: style.SUCCESS, State.HUNG: style.ERROR, State.STALE: style.WARNING}.get(state, style.NOTICE)


def one_line(text: str, width: int = INFO_WIDTH) -> str:
    """`text` on one line: whitespace and line breaks collapsed, cut at `width` with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def last_line(text: str) -> str:
    """The last non-blank line: the exception itself, for a traceback."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def info(row: DaemonStatus) -> str:
    """The INFO column: the daemon's own line, then its last error if it has counted any."""
    parts = [row.info]
    if row.errors and row.last_error:
        parts.append(f"last error: {last_line(row.last_error)}")
    return one_line("; ".join(part for part in parts if part))


def render(rows: list[DaemonStatus], style: Style, now: datetime) -> str:
    """The table, a header line and exactly one line per row."""
    labels = [operations.label(row.name, row.instance) for row in rows]
    width = max([len("NAME"), *map(len, labels)])
    lines = [style.MIGRATE_HEADING(f"{'NAME':<{width}} {'STATE':<14} {'PID':>7} {'UPTIME':>8} {'RSS':>8} "
                                   f"{'LAST TICK':>10} {'DONE':>7} {'ERRORS':>6}  INFO")]
    for label, row in zip(labels, rows, strict=True):
        rss = f"{row.rss_kib / 1024:.1f}M" if row.rss_kib else "-"
        state = state_style(style, row.state)(f"{STATE_LABELS.get(row.state, row.state):<14}")
        errors = f"{row.errors:>6}"
        lines.append(
            f"{label:<{width}} {state} {row.pid or '-':>7} {format_duration(row.uptime_seconds):>8} {rss:>8} "
            f"{row.last_tick_label(now):>10} {row.processed:>7} {style.ERROR(errors) if row.errors else errors}  "
            f"{info(row)}"
        )
    return "\n".join(lines)


def cluster_table(rows: list[DaemonStatus], now: datetime) -> str:
    """`daemonstatus --all-hosts` as a table: one line per instance, with its host and heartbeat age."""
    lines = [f"{'HOST':<20} {'NAME':<16} {'STATE':<8} {'PID':>7} {'HEARTBEAT':>10} {'UPTIME':>8} "
             f"{'DONE':>7} {'ERRORS':>6}  INFO"]
    for row in rows:
        label = operations.label(row.name, row.instance)
        age = f"{format_duration((now - row.last_heartbeat).total_seconds())} ago" if row.last_heartbeat else "-"
        line = (f"{row.host[:20]:<20} {label:<16} {row.state:<8} {row.pid or '-':>7} {age:>10} "
                f"{format_duration(row.uptime_seconds):>8} {row.processed:>7} {row.errors:>6}  {row.info}")
        lines.append(line.rstrip())
    return "\n".join(lines)

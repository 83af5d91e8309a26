"""The `daemonstatus` tables, this host's and (`--all-hosts`) every host's: one line per instance."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Column:
    """A column of a status table: its header, its width (0: its widest cell's) and how a row fills it."""

    header: str
    width: int
    cell: Callable[[DaemonStatus], str]
    right: bool = False
    paint: Callable[[DaemonStatus], Callable[[str], str]] | None = None  # a colour for the padded cell

    def fit(self, text: str, width: int) -> str:
        return f"{text:>{width}}" if self.right else f"{text:<{width}}"


def table(rows: list[DaemonStatus], columns: list[Column], info: Callable[[DaemonStatus], str],
          heading: Callable[[str], str] = str) -> str:
    """The one status table: a header line, then exactly one line per row, INFO last and unpadded."""
    widths = [column.width or max([len(column.header), *(len(column.cell(row)) for row in rows)])
              for column in columns]
    lines = [heading(" ".join(column.fit(column.header, width) for column, width in zip(columns, widths, strict=True))
                     + "  INFO")]
    for row in rows:
        cells = []
        for column, width in zip(columns, widths, strict=True):
            cell = column.fit(column.cell(row), width)
            cells.append(column.paint(row)(cell) if column.paint is not None else cell)
        lines.append((" ".join(cells) + f"  {info(row)}").rstrip())
    return "\n".join(lines)


def _label(row: DaemonStatus) -> str:
    return operations.label(row.name, row.instance)


def render(rows: list[DaemonStatus], style: Style, now: datetime) -> str:
    """This host's table, coloured by state."""
    return table(rows, [
        Column("NAME", 0, _label),
        Column("STATE", 14, lambda row: STATE_LABELS.get(row.state, row.state), paint=lambda row: state_style(
            style, row.state)),
        Column("PID", 7, lambda row: str(row.pid or "-"), right=True),
        Column("UPTIME", 8, lambda row: format_duration(row.uptime_seconds), right=True),
        Column("RSS", 8, lambda row: f"{row.rss_kib / 1024:.1f}M" if row.rss_kib else "-", right=True),
        Column("LAST TICK", 10, lambda row: row.last_tick_label(now), right=True),
        Column("DONE", 7, lambda row: str(row.processed), right=True),
        Column("ERRORS", 6, lambda row: str(row.errors), right=True,
               paint=lambda row: style.ERROR if row.errors else str),
    ], info, heading=style.MIGRATE_HEADING)


def cluster_table(rows: list[DaemonStatus], now: datetime) -> str:
    """`daemonstatus --all-hosts`: every host's instances, with their host and heartbeat age.

    Its INFO is the same one line as this host's: an instance's multi-line status can't split a row.
    """
    return table(rows, [
        Column("HOST", 20, lambda row: row.host[:20]),
        Column("NAME", 16, _label),
        Column("STATE", 8, lambda row: row.state),
        Column("PID", 7, lambda row: str(row.pid or "-"), right=True),
        Column("HEARTBEAT", 10, lambda row: f"{format_duration((now - row.last_heartbeat).total_seconds())} ago"
               if row.last_heartbeat else "-", right=True),
        Column("UPTIME", 8, lambda row: format_duration(row.uptime_seconds), right=True),
        Column("DONE", 7, lambda row: str(row.processed), right=True),
        Column("ERRORS", 6, lambda row: str(row.errors), right=True),
    ], info)

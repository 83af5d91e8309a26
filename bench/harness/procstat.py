"""What a process tree costs, read from /proc: resident and proportional memory, CPU seconds."""
from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return text[text.rindex(")") + 2:].split()


def tree(root: int) -> list[int]:
    """`root` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rollup_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB of `pid`, from smaps_rollup; OSError if it is gone."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """Summed (RSS, PSS) in KiB of `pids` still running. RSS counts shared pages once per process."""
    rss = pss = 0
    for pid in pids:
        try:
            one_rss, one_pss = rollup_kib(pid)
        except OSError:
            continue
        rss += one_rss
        pss += one_pss
    return rss, pss


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds used so far by `pids` (and by children they already reaped)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name.
        total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS

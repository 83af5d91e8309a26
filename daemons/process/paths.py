"""The one naming rule for a daemon instance's files: `{name}` or `{name}.{instance}`, then the suffix."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemons import conf


def stem(name: str, instance: int = 0) -> str:
    """`name` for instance 0 (so a single daemon's files read naturally), else `name.instance`."""
    return f"{name}.{instance}" if instance else name


@dataclass(frozen=True)
class RunPaths:
    """Where a daemon instance keeps its PID file, log file and wake-up socket."""

    pid: Path
    log: Path
    socket: Path

    @classmethod
    def for_daemon(cls, name: str, instance: int = 0) -> RunPaths:
        base = stem(name, instance)
        run_dir = conf.run_dir()
        return cls(pid=run_dir / f"{base}.pid", log=conf.log_dir() / f"{base}.log", socket=run_dir / f"{base}.sock")


def _instances_with(name: str, suffix: str, run_dir: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    plain = run_dir / f"{name}{suffix}"
    if plain.exists() or plain.is_symlink():
        found[0] = plain
    for path in run_dir.glob(f"{name}.*{suffix}"):
        middle = path.name[len(name) + 1 : -len(suffix)]
        if middle.isdigit() and stem(name, int(middle)) + suffix == path.name:
            found[int(middle)] = path
    return found


def instances(name: str, run_dir: Path | None = None) -> list[int]:
    """Instance numbers with a PID file in the run directory; instance 0 is always listed."""
    return sorted({0, *_instances_with(name, ".pid", run_dir or conf.run_dir())})


def socket_paths(name: str, run_dir: Path | None = None) -> list[Path]:
    """The wake-up sockets of every instance of daemon `name`, instance 0 first."""
    found = _instances_with(name, ".sock", run_dir or conf.run_dir())
    return [found[i] for i in sorted(found)]

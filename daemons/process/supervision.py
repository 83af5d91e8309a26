"""The supervisor's control socket: how the operator's verbs reach a running supervisor, both ends.

One Unix stream socket, `DAEMONS_RUN_DIR/supervisor.sock`. A client sends one JSON line,
`{"verb": ..., "names": [...]}`, and reads JSON lines back until the supervisor closes
the connection; the last line is the answer. Verbs:

- `status`: every child's state, PID, last exit reason and next restart.
- `stop NAMES`: stop those children; the supervisor won't restart them until asked.
- `start NAMES`: start children stopped that way (or restarting: now, without waiting).
- `restart NAMES`: stop each gracefully and start it again at once, as the supervisor's child.
- `shutdown`: stop every child, then the supervisor.

The answers to stop, start, restart and shutdown come once the children have done it:
`{"results": {label: {"event": ..., "pid": ..., "detail": ...}}}`.
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemons.process import pidfile
from daemons.process.paths import RunPaths

NAME = "supervisor"
VERBS = ("status", "stop", "start", "restart", "shutdown")


class ChildState(StrEnum):
    """A supervised daemon's state, as its supervisor sees it."""

    STARTING = "starting"  # forked, not ready yet
    RUNNING = "running"
    STOPPING = "stopping"  # told to stop; waiting for it to exit
    RESTARTING = "restarting"  # exited; started again after its backoff
    STOPPED = "stopped"  # stopped by an operator: not restarted until asked


class SupervisionError(Exception):
    """The supervisor could not be asked; the message is one line for the operator."""


def paths() -> RunPaths:
    """The supervisor's PID file, log and control socket."""
    return RunPaths.for_daemon(NAME)


def running_pid() -> int | None:
    """The PID of the live supervisor holding its lock on this host, or None."""
    return pidfile.read_holder(paths().pid)


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def ask(verb: str, names: list[str] | None = None, *, timeout: float = 5.0,
        path: Path | None = None) -> dict[str, Any]:
    """Send `verb` to the running supervisor and return its answer. Raises `SupervisionError`.

    `timeout` bounds each wait for a line (a stop waits for the children's own deadline).
    """
    address = str(path or paths().socket)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            sock.sendall(encode({"verb": verb, "names": names or []}))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            raise SupervisionError(f"the supervisor did not answer {verb!r} within {timeout:g}s") from None
        except OSError as exc:
            raise SupervisionError(f"cannot reach the supervisor at {address}: {exc.strerror or exc}") from None
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines:
        raise SupervisionError(f"the supervisor closed the connection without answering {verb!r}")
    answer: dict[str, Any] = json.loads(lines[-1])
    if "error" in answer:
        raise SupervisionError(answer["error"])
    return answer


@dataclass(frozen=True)
class ChildView:
    """One child as the running supervisor sees it."""

    label: str
    name: str
    instance: int
    state: ChildState
    pid: int | None
    reason: str  # why it last exited ("" if it never did)
    next_try: float | None  # seconds until its restart, while restarting
    restarts: int
    hung_kills: int


def children() -> dict[tuple[str, int], ChildView]:
    """The running supervisor's children by (name, instance); empty when no supervisor answers."""
    if running_pid() is None:
        return {}
    try:
        answer = ask("status", timeout=2.0)
    except SupervisionError:
        return {}
    return {(c["name"], c["instance"]): ChildView(**{**c, "state": ChildState(c["state"])})
            for c in answer.get("children", [])}

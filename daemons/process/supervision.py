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
import os
import socket
from dataclasses import dataclass, field
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


@dataclass
class Waiter:
    """A control connection waiting for children to reach an outcome, answered when all have."""

    conn: socket.socket
    pending: set[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


class ControlServer:
    """The supervisor's end of the control socket (bound by the supervisor, non-blocking).

    `accept()` reads one request; `wait()` holds its connection until `answer()` has given
    an outcome for every child it names, then sends them all and closes it.
    """

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self.sock = sock
        self.path = path
        self.waiters: list[Waiter] = []

    @classmethod
    def bind(cls, path: Path) -> ControlServer:
        """Listen at `path`, replacing a socket left by a supervisor that died. Raises `SupervisionError`."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SupervisionError(f"cannot remove the old control socket {path}: {exc.strerror}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(path))
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise SupervisionError(f"cannot create control socket {path}: {exc.strerror}") from None
        sock.setblocking(False)
        return cls(sock, path)

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, Any, list[str]] | None:
        """The next request, as (connection, verb, names); None if there was none or it was unreadable."""
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return None
        conn.settimeout(1.0)  # the client sends its line right after connecting
        try:
            request = json.loads(conn.makefile("rb").readline() or b"{}")
            return conn, request.get("verb"), list(request.get("names") or [])
        except (OSError, ValueError, AttributeError):
            conn.close()
            return None

    def reply(self, conn: socket.socket, message: dict[str, Any]) -> None:
        """Answer a request at once and close its connection."""
        self.send(conn, message)
        conn.close()

    def wait(self, conn: socket.socket, labels: set[str]) -> None:
        self.waiters.append(Waiter(conn, labels))

    def answer(self, label: str, event: str, pid: int | None, detail: str = "") -> None:
        """Record `event` for the waiters on child `label`; answer and close each waiter that has all its outcomes."""
        for waiter in list(self.waiters):
            if label in waiter.pending:
                waiter.pending.discard(label)
                waiter.results[label] = {"event": event, "pid": pid, "detail": detail}
                if not waiter.pending:
                    self.send(waiter.conn, {"results": waiter.results})
                    waiter.conn.close()
                    self.waiters.remove(waiter)

    def send(self, conn: socket.socket, message: dict[str, Any]) -> None:
        try:
            conn.sendall(encode(message))
        except OSError:
            pass  # the client gave up waiting: nothing to tell

    def close_fds(self) -> None:
        """Close the socket and every waiting connection, leaving the socket file (a forked child does this)."""
        for waiter in self.waiters:
            waiter.conn.close()
        self.waiters = []
        self.sock.close()

    def close(self) -> None:
        """Close everything and remove the socket file."""
        self.close_fds()
        try:
            os.unlink(self.path)
        except OSError:
            pass

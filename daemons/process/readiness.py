"""The readiness protocol: a starting process writes one report into a pipe, `READY <pid>` or `ERROR <reason>`.

The writer is the daemon (or supervisor) being started; the reader is whoever waits for
it: the command that detached it, or the supervisor that forked it. A process that ends
without a word closes the pipe, which the reader sees as EOF with nothing said.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


class Readiness:
    """The write end, in the starting process: the first report is sent, later ones are dropped."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _send(self, text: str) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, text.encode("utf-8", "replace"))
            except OSError:
                pass  # the reader is gone (a detaching command killed meanwhile): nobody to tell
            os.close(self.fd)
            self.fd = -1

    def ready(self, notes: list[str] | None = None) -> None:
        """Report ready, with this process's PID and, one per line, `notes` (what a supervisor could not start)."""
        self._send(f"READY {os.getpid()}\n" + "".join(f"{note}\n" for note in notes or []))

    def failed(self, message: str) -> None:
        self._send(f"ERROR {' '.join(message.split())}\n")

    def close(self) -> None:
        """Close without a report (a forked process that must not inherit it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class Report:
    """What the starting process said: ready (with its PID and notes), or the reason it failed."""

    ready: bool
    pid: int | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)


def parse(data: bytes) -> Report | None:
    """The report in `data`, everything the pipe carried; None if nothing was said."""
    first, *rest = data.decode("utf-8", "replace").splitlines() or [""]
    kind, _, detail = first.partition(" ")
    if kind == "READY" and detail.strip().isdigit():
        return Report(True, pid=int(detail), notes=[line for line in rest if line])
    if kind == "ERROR":
        return Report(False, error=detail.strip())
    return None


def wait(fd: int) -> Report | None:
    """Read the pipe `fd` to its end (the writer reported, or died) and close it; the report, or None."""
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
    return parse(b"".join(chunks))


class Reader:
    """The read end for a loop that can't block (the supervisor): feed it when the fd is readable."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd: int | None = fd
        self.data = b""

    def feed(self) -> bool:
        """Read what is there; True once the pipe reached its end (then the fd is closed)."""
        assert self.fd is not None
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return False
            if not chunk:
                self.close()
                return True
            self.data += chunk

    def finish(self) -> Report | None:
        """Once the writer is gone: read the rest and return the report."""
        if self.fd is not None:
            os.set_blocking(self.fd, True)
            self.feed()
        return parse(self.data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

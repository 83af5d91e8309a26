"""Detaching with python-daemon, and the readiness pipe that tells the operator's command how it went."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from django.db import connections

from . import conf, logs

EXIT_CRASHED = 70  # EX_SOFTWARE


class DetachError(Exception):
    """The detached daemon did not come up; the message is one line for the operator."""


class Readiness:
    """The write end of the readiness pipe, in the daemon: one line, READY or ERROR, then closed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _send(self, line: str) -> None:
        if self.fd >= 0:
            os.write(self.fd, line.encode("utf-8", "replace"))
            os.close(self.fd)
            self.fd = -1

    def ready(self) -> None:
        self._send(f"READY {os.getpid()}\n")

    def failed(self, message: str) -> None:
        self._send(f"ERROR {message}\n")


def start(main: Callable[[Readiness], int], *, log_path: Path) -> int:
    """Run `main(readiness)` in a detached daemon; return the daemon's PID once it called `ready()`.

    The daemon is a python-daemon `DaemonContext`: double fork, new session, working
    directory the project's, umask 027, standard streams on /dev/null. The readiness
    pipe and the project's open log files are kept across it. If the daemon reports
    `failed(message)` or exits without a word, this raises `DetachError` with that line.
    `main` runs in the daemon and returns its exit code; it never returns here.
    """
    # A database connection must never be shared across the fork: the daemon opens its own.
    connections.close_all()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon, measured by process tests
        os.close(read_fd)
        os._exit(_daemon_main(main, Readiness(write_fd), log_path))
    os.close(write_fd)
    message = _read_all(read_fd)
    os.waitpid(child, 0)
    kind, _, detail = message.partition(" ")
    if kind == "READY":
        return int(detail)
    if kind == "ERROR":
        raise DetachError(detail.strip())
    raise DetachError(f"the daemon exited during startup; see {log_path}")


def _read_all(fd: int) -> str:
    chunks = []
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _daemon_main(main: Callable[[Readiness], int], readiness: Readiness,
                 log_path: Path) -> int:  # pragma: no cover - runs in the daemon
    import daemon as python_daemon

    try:
        context = python_daemon.DaemonContext(
            working_directory=str(conf.base_dir()),
            umask=0o027,
            detach_process=True,
            files_preserve=[readiness.fd, *logs.files_to_preserve()],
            signal_map={},
            prevent_core=False,
        )
        context.open()
        code = main(readiness)
    except BaseException as exc:
        readiness.failed(f"{type(exc).__name__}: {exc}")
        code = EXIT_CRASHED
    readiness.failed(f"the daemon exited during startup with status {code}; see {log_path}")
    return code

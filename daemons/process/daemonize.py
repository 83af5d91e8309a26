"""Detaching with python-daemon: one fork, one DaemonContext, readiness reported through a pipe."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from django.db import connections

from daemons import conf
from daemons.process import logs, readiness
from daemons.process.exits import Exit


class DetachError(Exception):
    """The detached process did not come up; the message is one line for the operator."""


def start(main: Callable[[readiness.Readiness], int], *, keep: list[int], log_path: Path) -> readiness.Report:
    """Run `main(readiness)` in a detached process; return its READY report once it sent one.

    The process is a python-daemon `DaemonContext`: double fork, new session, working
    directory the project's, umask 027, standard streams on /dev/null. The readiness
    pipe, the descriptors in `keep` (a PID file whose lock the caller took) and the
    project's open log files are kept across it. If the process reports
    `failed(message)` or exits without a word, this raises `DetachError` with that line.
    `main` runs in the detached process and returns its exit code; it never returns here.
    """
    # A database connection must never be shared across the fork: the daemon opens its own.
    connections.close_all()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon, measured by process tests
        os.close(read_fd)
        os._exit(_detached_main(main, readiness.Readiness(write_fd), keep, log_path))
    os.close(write_fd)
    report = readiness.wait(read_fd)
    os.waitpid(child, 0)
    if report is None:
        raise DetachError(f"it exited during startup; see {log_path}")
    if not report.ready:
        raise DetachError(report.error)
    return report


def _detached_main(main: Callable[[readiness.Readiness], int], ready: readiness.Readiness, keep: list[int],
                   log_path: Path) -> int:  # pragma: no cover - runs in the daemon
    import daemon as python_daemon

    try:
        python_daemon.DaemonContext(
            working_directory=str(conf.base_dir()),
            umask=0o027,
            detach_process=True,
            files_preserve=[ready.fd, *keep, *logs.files_to_preserve()],
            signal_map={},
            prevent_core=False,
        ).open()
        code = main(ready)
    except BaseException as exc:  # noqa: BLE001 - the readiness pipe says why, whatever it was
        ready.failed(f"{type(exc).__name__}: {exc}")
        code = Exit.CRASHED
    ready.failed(f"it exited during startup with status {code}; see {log_path}")
    return code

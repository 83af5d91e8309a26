"""Stopping child processes: SIGTERM, a grace period, then SIGKILL."""
from __future__ import annotations

import subprocess


def terminate(*procs: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM every process of `procs` still running, then reap each; one that outlives `timeout` is killed.

    All are signalled before any is waited for, so their shutdowns overlap.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

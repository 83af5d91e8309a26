"""Child processes: whether one is alive, and stopping them (SIGTERM, a grace period, then SIGKILL)."""
from __future__ import annotations

import os
import subprocess


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie is dead for our purposes."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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

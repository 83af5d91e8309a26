"""The fcntl-locked PID file: the lock, not the number in the file, says who is running."""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

PID_FILE_MODE = 0o644


class PidFileError(Exception):
    """The PID file can't be used; the message is one line for the operator."""


class AlreadyRunning(PidFileError):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"already running (pid {pid})" if pid else f"already running (lock held on {path})")


def check_run_dir(directory: Path) -> None:
    """Create `directory` if needed; refuse one that anybody may write to without the sticky bit."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PidFileError(f"cannot create run directory {directory}: {exc.strerror}") from None
    mode = directory.stat().st_mode
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise PidFileError(f"refusing run directory {directory}: world-writable without the sticky bit")


def _open_nofollow(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, PID_FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PidFileError(f"refusing PID file {path}: it is a symbolic link") from None
        raise PidFileError(f"cannot open PID file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PidFileError(f"refusing PID file {path}: not a regular file")
    os.set_blocking(fd, True)
    return fd


class PidFile:
    """An exclusive, fcntl-locked PID file held for the life of the process.

    `acquire()` takes the lock or raises `AlreadyRunning`; the lock dies with the process,
    so a file left by a crash never blocks a restart. `write(pid)` records the PID alone on
    the first line (LSB). `release()` removes the file, then drops the lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        check_run_dir(self.path.parent)
        while True:
            fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(self.path, read_holder(self.path)) from None
            # A predecessor may have unlinked the path between our open and our lock:
            # then we hold a lock on a dead inode and must start over.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                os.fchmod(fd, PID_FILE_MODE)
                return
            os.close(fd)

    def write(self, pid: int | None = None) -> None:
        """Replace the file's content with `pid` (default: this process) in one write."""
        assert self.fd is not None, "acquire() first"
        data = f"{pid or os.getpid()}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        """Remove the file, then drop the lock.

        A daemon that dropped privileges may not unlink a file in a root-owned run
        directory; it empties the file instead, which reads as "stopped", not stale.
        """
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except PermissionError:
            os.ftruncate(self.fd, 0)
        os.close(self.fd)
        self.fd = None

    def release_quietly(self) -> None:
        """`release()` for exit paths that must not raise."""
        try:
            self.release()
        except OSError:
            pass

    def forget(self) -> None:
        """Close our descriptor without unlinking: a forked child holds the lock now."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        self.write()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pid(path: Path) -> int | None:
    """The PID written in the file, or None if the file is missing, empty or garbled."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(64).strip()
    except OSError:
        return None
    try:
        pid = int(first)
    except ValueError:
        return None
    return pid if pid > 0 else None


def is_locked(path: Path) -> bool:
    """True if some process holds the lock on the PID file at `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _has_open(pid: int, path: Path) -> bool:
    """True if process `pid` has the file at `path` open (so it may hold the lock)."""
    try:
        target = os.stat(path, follow_symlinks=False)
        fd_dir = Path(f"/proc/{pid}/fd")
        for entry in fd_dir.iterdir():
            try:
                if os.path.samestat(os.stat(entry), target):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def read_holder(path: Path, wait: float = 2.0) -> int | None:
    """The PID of the live process holding the lock on `path`, or None.

    The number in the file is trusted only if the lock is held and that very process has
    the file open, so a reused PID written in a stale file is never reported as alive.
    A daemon that is still starting writes its PID a moment after taking the lock;
    `wait` bounds how long we give it.
    """
    deadline = time.monotonic() + wait
    while True:
        if not is_locked(path):
            return None
        pid = read_pid(path)
        if pid is not None and _has_open(pid, path):
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


@dataclass(frozen=True)
class PidState:
    """What the PID file says: running (with the holder's pid), stale, or absent."""

    state: str  # "running" | "stale" | "stopped"
    pid: int | None


def inspect(path: Path) -> PidState:
    if is_locked(path):
        return PidState("running", read_holder(path))
    pid = read_pid(path)
    if pid is not None:
        return PidState("stale", pid)
    return PidState("stopped", None)

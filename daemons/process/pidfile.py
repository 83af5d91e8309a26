"""The fcntl-locked PID file: the lock, not the number in the file, says who is running."""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from daemons.process.exits import State
from daemons.process.procfs import boot_time, started_since_boot

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

        The path is removed only while it is still the very file that was locked: if
        someone replaced it meanwhile, the replacement belongs to somebody else. A daemon
        that dropped privileges may not unlink a file in a root-owned run directory; it
        empties the file instead, which reads as "stopped", not stale.
        """
        if self.fd is None:
            return
        emptied = False
        try:
            ours = os.path.samestat(os.fstat(self.fd), os.lstat(self.path))
        except FileNotFoundError:
            ours = False
        except PermissionError:
            # After a privilege drop the run directory may not even be searchable: empty
            # our own inode, which is the locked file whether or not it is still at the path.
            ours, emptied = False, True
        if ours:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except PermissionError:
                emptied = True
        if emptied:
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


def _parse_pid(data: bytes) -> int | None:
    try:
        pid = int(data.split(b"\n", 1)[0].strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def _snapshot(path: Path) -> tuple[os.stat_result, int | None] | None:
    """The file's identity and the PID it names, read through one descriptor; None if absent.

    Opening takes no lock, follows no symbolic link and never blocks on a FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except PermissionError:
        try:
            return os.lstat(path), None
        except OSError:
            return None
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        pid = _parse_pid(os.pread(fd, 64, 0)) if stat.S_ISREG(info.st_mode) else None
    finally:
        os.close(fd)
    return info, pid


def read_pid(path: Path) -> int | None:
    """The PID written in the file, or None if the file is missing, empty, garbled or not a regular file."""
    snapshot = _snapshot(path)
    return snapshot[1] if snapshot else None


def _mount_devices(fd: int) -> set[int]:
    """The device number of the mount `fd` lives on, as /proc/locks prints it.

    It can differ from `st_dev` (btrfs subvolumes, some overlay setups): the kernel
    prints the superblock's device, which /proc/self/mountinfo also shows.
    """
    try:
        fdinfo = Path(f"/proc/self/fdinfo/{fd}").read_text()
        mnt_id = next(line.split()[1] for line in fdinfo.splitlines() if line.startswith("mnt_id:"))
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[0] == mnt_id:
                major, minor = fields[2].split(":")
                return {os.makedev(int(major), int(minor))}
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return set()


def _identity(path: Path) -> tuple[set[int], int] | None:
    """(possible device numbers, inode) of the file at `path`, without following a link."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        return {info.st_dev} | _mount_devices(fd), info.st_ino
    finally:
        os.close(fd)


def lock_pids(path: Path) -> list[int] | None:
    """The PIDs /proc/locks lists as holding a flock on the file at `path`; None if it isn't locked.

    Reading /proc/locks takes no lock and works for every user, whoever holds the lock.
    The PID listed is the process that *took* the lock: after a fork it may be a parent
    that has since exited, so it says that the file is locked, not by whom. A PID is 0
    or -1 when the holder lives in another PID namespace (or is an OFD lock).
    """
    identity = _identity(path)
    if identity is None:
        return None
    devices, inode = identity
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    pids = []
    for line in table.splitlines():
        fields = line.split()
        # "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"; "N: -> FLOCK ..." lines are waiters.
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, ino = fields[5].split(":")
            device = os.makedev(int(major, 16), int(minor, 16))
            if device in devices and int(ino) == inode:
                pids.append(int(fields[4]))
        except ValueError:
            continue
    return pids or None


def is_locked(path: Path) -> bool:
    """True if some process holds the flock on the PID file at `path`; takes no lock itself."""
    return lock_pids(path) is not None


# A process counts as started before the file's last write if its start time (clock
# ticks since boot, rounded down) is at most this much later than the file's mtime
# (kernel time, up to a jiffy coarse). A PID reused within this window is not caught.
_START_SLACK_SECONDS = 0.05


def _has_open(pid: int, info: os.stat_result) -> bool | None:
    """True if `pid` has the file open, False if not (or dead), None if we may not look."""
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except PermissionError:
        return None
    except OSError:
        return False
    for entry in entries:
        try:
            if os.path.samestat(os.stat(entry), info):
                return True
        except PermissionError:
            return None
        except OSError:
            continue
    return False


def _is_holder(pid: int, info: os.stat_result, lockers: list[int]) -> bool:
    """True if `pid`, named in the locked file described by `info`, is the process holding it.

    Where /proc/PID/fd is readable, the proof is that `pid` has this very file open.
    Where it is not (a process of another user, or one that dropped privileges), the
    proof is that `pid` took the lock itself (/proc/locks), or that it was alive when the
    file was last written: only the holder writes the file, and a PID that a stale file
    names and that was reused since started after that write.
    """
    opened = _has_open(pid, info)
    if opened is not None:
        return opened
    if pid in lockers:
        return os.path.exists(f"/proc/{pid}")
    started = started_since_boot(pid)
    if started is None:
        return False
    return started <= info.st_mtime - boot_time() + _START_SLACK_SECONDS


def read_holder(path: Path, wait: float = 2.0) -> int | None:
    """The PID of the live process holding the lock on `path`, or None.

    The number in the file is trusted only if the lock is held and that very process
    holds it (see `_is_holder`), so a reused PID written in a stale file is never
    reported as alive. No lock is taken, so asking never makes a concurrent start fail.
    A daemon that is still starting writes its PID a moment after taking the lock;
    `wait` bounds how long we give it.
    """
    deadline = time.monotonic() + wait
    while True:
        lockers = lock_pids(path)
        if lockers is None:
            return None
        snapshot = _snapshot(path)
        if snapshot is not None and snapshot[1] is not None and _is_holder(snapshot[1], snapshot[0], lockers):
            return snapshot[1]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


@dataclass(frozen=True)
class PidState:
    """What the PID file says: running (with the holder's pid), stale, or absent."""

    state: State  # running | stale | stopped
    pid: int | None


def inspect(path: Path) -> PidState:
    """The state of the PID file at `path`, read without taking its lock.

    "running" whenever the file is locked, even if the holder can't be named (pid None).
    """
    if is_locked(path):
        return PidState(State.RUNNING, read_holder(path))
    pid = read_pid(path)
    if pid is not None:
        return PidState(State.STALE, pid)
    return PidState(State.STOPPED, None)


def remove_stale(path: Path) -> None:
    """Remove the PID file and wake-up socket a killed daemon left, taking the lock first so no new owner loses them."""
    stale = PidFile(path)
    try:
        stale.acquire()
    except PidFileError:
        return
    try:
        socket_path = path.with_suffix(".sock")
        if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            os.unlink(socket_path)
    except OSError:
        pass
    stale.release()

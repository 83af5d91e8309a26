"""Wake-ups: a datagram on the daemon's Unix socket ends its wait at once."""
from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

from .paths import socket_paths

logger = logging.getLogger("daemons.wakeup")

# sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


def wake(name: str, run_dir: Path | None = None) -> int:
    """Nudge every running instance of daemon `name` to tick now; return how many were reached.

    Never raises and never blocks: a daemon that isn't running simply isn't woken, and
    it will find the work on its next interval.
    """
    reached = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in socket_paths(name, run_dir):
            try:
                sock.sendto(b"wake", str(path))
                reached += 1
            except OSError as exc:
                # ECONNREFUSED: a socket file left by a dead daemon. EAGAIN: the daemon
                # already has wake-ups queued, which is as good as ours.
                if exc.errno == errno.EAGAIN:
                    reached += 1
                elif exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                    logger.warning("could not wake %s at %s: %s", name, path, exc)
    return reached


def bind(path: Path) -> socket.socket | None:
    """Bind the daemon's wake-up socket at `path`, or return None if the path is too long.

    Whatever was at `path` is removed first (a socket left by a crash). A root-started
    daemon hands the socket to its user with `Credentials.hand_over`, which never
    follows a symbolic link.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        logger.warning("wake-up socket path %s is too long; the daemon will only poll", path)
        return None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(str(path))
    return sock

"""Wake-ups: NOTIFY on PostgreSQL (any host), else a datagram on the daemon's Unix socket (this host)."""
from __future__ import annotations

import errno
import logging
import os
import socket
from functools import partial
from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction

from daemons.cluster import listen
from daemons.cluster.listen import channel
from daemons.process.paths import socket_paths

logger = logging.getLogger("daemons.wakeup")

# sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


def wake(name: str, run_dir: Path | None = None, *, using: str | None = None) -> int:
    """Nudge every running instance of daemon `name` to tick now; return how many were reached.

    Inside a transaction (on database `using`, default "default") nothing is sent yet: the
    wake-up goes out once it commits, and not at all if it rolls back, so the woken daemon
    always sees the rows the caller wrote. The count is then 0. This holds on every
    database, SQLite included, and is the one rule every caller (a signup, the dashboard's
    "run now", `Daemon.wake()`) goes through.

    On PostgreSQL with DAEMONS_LISTEN on, one NOTIFY on the daemon's `channel` reaches
    its instances on every host (the count is then 1: listeners are not counted). Otherwise
    (SQLite, LISTEN off, or an explicit `run_dir`) a datagram goes to each wake-up socket in
    the run directory. Never raises and never blocks: a daemon that isn't running simply
    isn't woken, and it will find the work on its next interval.
    """
    if connections[using or DEFAULT_DB_ALIAS].in_atomic_block:
        transaction.on_commit(partial(_send, name, run_dir), using=using)
        return 0
    return _send(name, run_dir)


def _send(name: str, run_dir: Path | None) -> int:
    if run_dir is None and listen.enabled() and _notify(name):
        return 1
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


def _notify(name: str) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [channel(name)])
    except DatabaseError as exc:
        logger.warning("could not notify %s: %s", name, exc)
        return False
    return True


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

"""Wake-ups across hosts on PostgreSQL: LISTEN on a dedicated connection whose socket the daemon's wait selects on."""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

from daemons import conf
from daemons.process.backoff import backoff

logger = logging.getLogger("daemons.listen")

# Reconnection waits 1, 2, 4... seconds after each failure, up to this.
RECONNECT_BACKOFF_CAP = 30.0
# A connection attempt blocks the daemon's loop at most this long (a stop waits for it).
CONNECT_TIMEOUT = 3
# TCP keepalives find a LISTEN connection whose host or network went away within about 20 s;
# without them a half-open connection would look idle, not dead, until the kernel gave up.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
              "tcp_user_timeout": 20000}
# Keys of Django's connection parameters that psycopg.connect() does not take for a bare connection.
_DJANGO_ONLY = ("cursor_factory", "context", "pool", "server_side_binding", "isolation_level", "assume_role")
# PostgreSQL truncates identifiers, channel names included, to 63 bytes.
MAX_CHANNEL = 63


def channel(name: str) -> str:
    """The LISTEN/NOTIFY channel of daemon `name`: `daemons_<name>`, shortened with a hash past 63 bytes.

    Used as a value by NOTIFY (`pg_notify`) and as a quoted identifier by LISTEN, so any
    daemon name, whatever its characters or case, gets a channel of its own.
    """
    full = f"daemons_{name}"
    if len(full.encode()) <= MAX_CHANNEL:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{full.encode()[:MAX_CHANNEL - 17].decode(errors='ignore')}_{digest}"


def enabled(alias: str = "default") -> bool:
    """True when wake-ups go through LISTEN/NOTIFY: the database is PostgreSQL and DAEMONS_LISTEN is on."""
    return bool(conf.get("LISTEN")) and connections[alias].vendor == "postgresql"


def connection_params(alias: str = "default") -> dict[str, Any]:
    """psycopg.connect() keyword arguments for the database `alias`, as Django would connect, with keepalives."""
    params = dict(connections[alias].get_connection_params())
    for key in _DJANGO_ONLY:
        params.pop(key, None)
    return {**KEEPALIVES, **params, "connect_timeout": CONNECT_TIMEOUT}


class Listener:
    """LISTENs on a daemon's channel (see `channel`) on its own psycopg connection, never Django's.

    - `fileno()` is the connection's socket while connected, else None: the daemon's
      wait selects on it together with its stop signal and its interval.
    - `drain()` reads every notification that has arrived, without blocking, and says
      whether there was any: however many arrived, they make one wake-up, so a burst of
      signups leads to one claim pass.
    - When the connection drops (the server restarted, the backend was terminated, the
      network went away: TCP keepalives notice), it is closed and `reconnect_if_due()`
      tries again after 1, 2, 4... up to 30 s. The daemon polls at its interval
      meanwhile, and a successful reconnection counts as a wake-up, so no work waits for
      a notification that was sent while nobody listened.
    """

    def __init__(self, channel: str, params: dict[str, Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.params = params
        self.clock = clock
        self.conn: Any = None
        self.failures = 0
        self.retry_at: float | None = None

    def connect(self) -> bool:
        """Open the connection and LISTEN; True on success, else schedule the next attempt."""
        import psycopg
        from psycopg import sql

        try:
            conn = psycopg.connect(autocommit=True, **self.params)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as exc:
            self._lost(f"cannot listen for wake-ups on {self.channel!r}: {exc}".strip())
            return False
        self.conn = conn
        if self.failures:
            logger.info("listening for wake-ups on %r again", self.channel, extra={"action": "listen_restored"})
        self.failures, self.retry_at = 0, None
        return True

    def fileno(self) -> int | None:
        if self.conn is None:
            return None
        import psycopg

        try:
            fd: int = self.conn.pgconn.socket
            return fd
        except psycopg.Error as exc:  # libpq already knows the connection is gone
            self._lost(f"lost the wake-up connection: {exc}".strip())
            return None

    def drain(self) -> bool:
        """Consume the notifications that arrived; True if any did. A broken connection is closed."""
        if self.conn is None:
            return False
        import psycopg

        pgconn, got = self.conn.pgconn, False
        try:
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                got = True
        except psycopg.Error as exc:
            self._lost(f"lost the wake-up connection: {exc}".strip())
            return got
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            self._lost("lost the wake-up connection")
        return got

    def retry_in(self) -> float | None:
        """Seconds until the next reconnection attempt is due; None while connected."""
        return None if self.retry_at is None else max(0.0, self.retry_at - self.clock())

    def reconnect_if_due(self) -> bool:
        """Reconnect if disconnected and the backoff has passed; True if this reconnected."""
        if self.conn is not None or self.retry_at is None or self.clock() < self.retry_at:
            return False
        return self.connect()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - already broken: nothing left to release
                pass
            self.conn = None

    def _lost(self, why: str) -> None:
        self.close()
        self.failures += 1
        delay = backoff(self.failures, base=1.0, cap=RECONNECT_BACKOFF_CAP)
        self.retry_at = self.clock() + delay
        log = logger.warning if self.failures == 1 else logger.debug
        log("%s; polling meanwhile, retrying in %g s", why, delay, extra={"action": "listen_lost"})


def for_daemon(name: str, alias: str = "default") -> Listener | None:
    """A connected Listener for daemon `name`, or None when wake-ups don't go through LISTEN (see `enabled`).

    A first connection that fails still returns the Listener: it retries with backoff.
    """
    if not enabled(alias):
        return None
    # Named, so pg_stat_activity tells the listening connections from the working ones.
    params = {"application_name": f"daemons listen {name}"[:63], **connection_params(alias)}
    listener = Listener(channel(name), params)
    listener.connect()
    return listener

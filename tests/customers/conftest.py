"""Fixtures for onboarding tests: a real SMTP sink, a Sentry sink, PostgreSQL databases."""
from __future__ import annotations

import asyncio
import email
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import Project


def port_reservation() -> socket.socket:
    """A loopback port kept for one server across its stops: bound, never listening.

    A connection to it is refused, as to a host whose mail server is down. The port is picked while the
    socket may not share it (so the kernel hands out one nobody has bound), then opened to sharing with
    SO_REUSEADDR, which the server sets too: only a server that asks for this very port with SO_REUSEADDR
    can bind it beside us, and no other process can take it while ours is stopped.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


@dataclass(frozen=True)
class Received:
    """One message the sink accepted."""

    to: tuple[str, ...]
    message_id: str
    at: float
    raw: bytes = b""  # the message as it came, headers and body


@dataclass
class SinkHandler:
    """aiosmtpd handler: records every accepted message, then waits `delay` before saying 250.

    Recording before the reply means a client killed during the delay leaves a message
    the mail server accepted but the client never heard accepted: the window between
    "sent" and "committed". `reject` maps an address to the reply to give at RCPT and
    how many times to give it (None: always); after that the address is accepted.
    """

    delay: float = 0.0
    mail_delay: float = 0.0  # before each MAIL FROM reply
    rcpt_delay: float = 0.0  # before each RCPT reply
    reset_after_data: bool = False  # record the message, then drop the connection instead of replying
    reject_all: str = ""  # the reply to every RCPT, if set (a relay that refuses everyone)
    reject: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    replied: int = 0
    # hold_next(): the next message is recorded, then its 250 waits for `release`.
    holding: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    held_message: Received | None = None  # the message whose 250 is held
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold_next(self) -> None:
        self.release.clear()
        self.held.clear()
        self.holding.set()

    def release_held(self) -> None:
        self.holding.clear()
        self.release.set()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # aiosmtpd calls it by this name
        if self.mail_delay:
            await asyncio.sleep(self.mail_delay)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # aiosmtpd calls it by this name
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        with self.lock:
            reply, times = self.reject.get(address.lower(), (self.reject_all, None if self.reject_all else 0))
            if reply and (times is None or times > 0):
                if times is not None:
                    self.reject[address.lower()] = (reply, times - 1)
                self.refused.append((address.lower(), reply))
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw)
        received = Received(tuple(a.lower() for a in envelope.rcpt_tos), message["Message-ID"] or "",
                            time.monotonic(), raw)
        with self.lock:
            self.received.append(received)
        if self.reset_after_data:
            server.transport.abort()  # a reset after the final dot: the client never hears
            return "250 never heard"
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.holding.is_set() and not self.held.is_set():
            self.held_message = received
            self.held.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        with self.lock:
            self.replied += 1
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server on loopback that can be stopped and started on the same port, which stays reserved
    for it (another test's server can't take it during an outage test) until `close`."""

    def __init__(self, handler: SinkHandler, idle_timeout: float = 300) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout  # after which the server says 421 and hangs up, as real servers do
        self._reservation = port_reservation()
        self.port = self._reservation.getsockname()[1]
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10,
                                     timeout=self.idle_timeout)
        self.controller.start()

    def stop(self) -> None:
        self.handler.release.set()  # a held reply must not keep the server from stopping
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def close(self) -> None:
        """Stop the server and give the port back."""
        self.stop()
        self._reservation.close()

    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def count(self) -> int:
        with self.handler.lock:
            return len(self.handler.received)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(SinkHandler())
    try:
        sink.start()
        yield sink
    finally:
        sink.close()


def onboarding_env(project: Project, sink: SmtpSink, **settings: object) -> dict[str, str]:
    """Environment for onboarding daemons in `project`: mail to `sink`, quick ticks and retries."""
    env = {
        "EMAIL_URL": sink.url,
        "ONBOARDING_INTERVAL_SECONDS": "0.2",
        "ONBOARDING_RETRY_BASE_SECONDS": "0.2",
        "ONBOARDING_RETRY_MAX_SECONDS": "1",
        "ONBOARDING_SMTP_TIMEOUT_SECONDS": "2",
        "ONBOARDING_LEASE_SECONDS": "30",
    }
    env.update({f"ONBOARDING_{key.upper()}": str(value) for key, value in settings.items()})
    project.env.update(env)
    return env


def customers_seed(count: int, *, prefix: str = "c") -> list[int]:
    """Create `count` customers at once, as a backlog; return their ids, oldest first."""
    from customers.models import Customer

    Customer.objects.bulk_create(
        [Customer(name=f"Customer {i}", email=f"{prefix}{i}@example.com") for i in range(count)], batch_size=500
    )
    return list(Customer.objects.order_by("created_at", "id").values_list("id", flat=True))


def claims_past_lease(slack: float = 0.5) -> list[tuple[int, str]]:
    """Unfinished customers still held by someone more than `slack` seconds after the lease ended."""
    from datetime import timedelta

    from django.utils import timezone

    from customers.models import Customer

    return list(
        Customer.objects.exclude(claimed_by="")
        .filter(onboarded_at__isnull=True, claim_expires_at__lt=timezone.now() - timedelta(seconds=slack))
        .values_list("id", "claimed_by")
    )


@contextmanager
def sqlite_write_lock(path: str) -> Iterator[None]:
    """Hold the SQLite database's write lock, as a long write by another process would."""
    conn = sqlite3.connect(path, timeout=20, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()



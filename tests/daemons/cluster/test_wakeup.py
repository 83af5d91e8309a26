"""daemons.wake(): public, and inside a transaction it waits for the commit (a real socket, a real database)."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction

import daemons
from daemons.cluster import wakeup


@pytest.fixture
def wake_socket(tmp_path: Path, settings) -> Iterator[socket.socket]:
    """The wake-up socket a running `counter` daemon binds in the run directory; the wake goes to it."""
    settings.DAEMONS_RUN_DIR = str(tmp_path)
    settings.DAEMONS_LISTEN = False  # the socket on PostgreSQL too: the rule under test doesn't depend on the vendor
    sock = wakeup.bind(tmp_path / "counter.sock")
    assert sock is not None
    with sock:
        yield sock


def received(sock: socket.socket) -> int:
    """How many wake-ups are queued on `sock` (it is non-blocking), consuming them."""
    count = 0
    while True:
        try:
            sock.recv(64)
        except BlockingIOError:
            return count
        count += 1


def test_wake_is_the_public_api() -> None:
    assert "wake" in daemons.__all__ and daemons.wake is wakeup.wake


@pytest.mark.django_db(transaction=True)
def test_wake_outside_a_transaction_reaches_the_daemon_at_once(wake_socket) -> None:
    assert daemons.wake("counter") == 1
    assert received(wake_socket) == 1


@pytest.mark.django_db(transaction=True)
def test_wake_inside_a_transaction_waits_for_the_commit(wake_socket) -> None:
    with transaction.atomic():
        assert daemons.wake("counter") == 0
        with transaction.atomic():  # a savepoint: still not committed
            daemons.wake("counter")
        assert received(wake_socket) == 0, "woken before the commit: the daemon may not see the rows yet"
    assert received(wake_socket) == 2


@pytest.mark.django_db(transaction=True)
def test_wake_in_a_rolled_back_transaction_never_goes_out(wake_socket) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        daemons.wake("counter")
        raise RuntimeError("rolled back")
    assert received(wake_socket) == 0

"""sd_notify against a real Unix datagram socket bound by the test."""
from __future__ import annotations

import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from daemons.notify import Notifier
from tests.conftest import wait_for

pytestmark = pytest.mark.process


class NotifySocket:
    """A bound datagram socket that timestamps each message as it arrives."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="notify-")
        self.path = str(Path(self.dir.name) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def poll(self) -> list[str]:
        return [m for _, m in list(self.messages)]

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self.sock.close()
        self.dir.cleanup()


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def test_ready_status_watchdog_and_stopping(project, notify_socket) -> None:
    proc = project.popen("rundaemon", "counter",
                         env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "400000"})
    wait_for(lambda: any(m.startswith("READY=1") for m in notify_socket.poll()), message="READY=1")
    wait_for(lambda: sum(m == "WATCHDOG=1" for m in notify_socket.poll()) >= 3, message="watchdog pings")
    assert "STATUS=counting" in notify_socket.poll()
    ready = next(m for m in notify_socket.poll() if m.startswith("READY=1"))
    assert f"MAINPID={proc.pid}" in ready
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0
    messages = notify_socket.poll()
    assert "STOPPING=1" in messages
    assert messages.index("STOPPING=1") > max(i for i, m in enumerate(messages) if m.startswith("READY=1"))


def test_no_ready_without_a_database(project, notify_socket, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = project.popen("rundaemon", "counter", env={"NOTIFY_SOCKET": notify_socket.path,
                                                      "DATABASE_URL": f"sqlite:///{blocker}/db.sqlite3"})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "cannot reach the database" in err
    assert not any(m.startswith("READY=1") for m in notify_socket.poll())


def test_a_hung_tick_stops_the_watchdog_pings(project, notify_socket, tmp_path) -> None:
    marker = tmp_path / "marker"
    proc = project.popen("rundaemon", "slow", env={
        "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000",
        "TESTAPP_TICKS_FILE": str(marker), "TESTAPP_TICK_SECONDS": "1.5", "TESTAPP_INTERVAL": "2.5",
    })
    try:
        wait_for(lambda: marker.exists() and marker.read_text() == "tick done\n", message="the first slow tick")
        wait_for(lambda: marker.read_text() == "in tick\n", message="the second slow tick")
        wait_for(lambda: marker.read_text() == "tick done\n", message="the second tick's end")
        ended = time.monotonic()
        wait_for(lambda: any(t > ended and m == "WATCHDOG=1" for t, m in notify_socket.messages),
                 message="a ping after the tick")
        pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        # Pings every 0.1 s while idle, none during a 1.5 s tick.
        assert max(gaps) > 1.2
        assert sorted(gaps)[len(gaps) // 2] < 0.5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_notifier_parses_the_environment(tmp_path) -> None:
    assert not Notifier({}).enabled
    notifier = Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "3000000"})
    assert notifier.address == "\0abstract" and notifier.watchdog_interval == 1.5
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"}).watchdog_interval is None

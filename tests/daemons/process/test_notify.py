"""sd_notify against a real Unix datagram socket bound by the test."""
from __future__ import annotations

import signal
import socket
import struct
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from daemons.process.notify import Notifier
from tests.conftest import wait_for

pytestmark = pytest.mark.process


# Linux's SO_TIMESTAMP (also the control message's type), which Python's socket module does not name.
SO_TIMESTAMP = 29
TIMEVAL = struct.Struct("qq")


class NotifySocket:
    """A bound datagram socket that records each message with the time it was sent.

    The kernel stamps a datagram as the sender's sendto() queues it (SO_TIMESTAMP), so a gap between two
    pings is the daemon's own, whenever this process's thread gets to read them on a loaded machine.
    """

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="notify-")
        self.path = str(Path(self.dir.name) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []  # (time.monotonic() of the send, the message)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.closed.is_set():
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(4096, socket.CMSG_SPACE(TIMEVAL.size))
            except TimeoutError:
                continue
            self.messages.append((self._sent_at(ancillary), data.decode()))

    @staticmethod
    def _sent_at(ancillary: list[tuple[int, int, bytes]]) -> float:
        """The kernel's wall-clock stamp, on the monotonic clock the tests compare it with."""
        [stamp] = [data for level, kind, data in ancillary if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMP)]
        seconds, microseconds = TIMEVAL.unpack(stamp[:TIMEVAL.size])
        return seconds + microseconds / 1e6 - (time.time() - time.monotonic())

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


def test_progress_keeps_pings_and_the_heartbeat_coming_during_a_long_tick(project, notify_socket, tmp_path) -> None:
    from daemons.models import Heartbeat

    marker = tmp_path / "marker"
    proc = project.popen("rundaemon", "steady", env={
        "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000", "TESTAPP_INTERVAL": "1",
        "TESTAPP_TICKS_FILE": str(marker), "TESTAPP_UNITS": "300", "TESTAPP_UNIT_SECONDS": "0.03",
        "TESTAPP_PROGRESS_LIMIT": "0.5",
    })
    try:
        wait_for(lambda: marker.exists(), message="the long tick to start")
        # Counters move while the tick runs, not only after it.
        wait_for(lambda: 0 < (Heartbeat.objects.filter(name="steady", last_outcome="busy")
                              .values_list("processed", flat=True).first() or 0) < 300,
                 timeout=20, message="a busy heartbeat with the units done so far")
        wait_for(lambda: marker.read_text() == "tick done\n", timeout=60, message="the end of the 9 s tick")
        ready = next(t for t, m in notify_socket.messages if m.startswith("READY=1"))
        pings = [ready] + [t for t, m in notify_socket.messages if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in pairwise(pings)]
        assert pings[-1] - ready > 8, "the pings span the whole tick"
        # Stamped as the daemon sent them (NotifySocket). They are due every 0.5 s; the guarantee is systemd's:
        # no WATCHDOG_USEC without one, or it restarts the unit. A loaded machine may delay one, never skip four.
        assert max(gaps) < 2.0, f"a gap of {max(gaps):.2f} s between pings with WATCHDOG_USEC=2000000"
        # The marker is written inside the tick; the heartbeat that ends it follows.
        wait_for(lambda: Heartbeat.objects.get(name="steady").processed == 300, timeout=10,
                 message="the heartbeat after the tick counting all 300 units")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_a_tick_without_progress_loses_its_pings_after_the_limit_and_reads_hung(project, notify_socket,
                                                                               tmp_path) -> None:
    marker = tmp_path / "marker"
    proc = project.popen("rundaemon", "slow", env={
        "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "400000", "TESTAPP_TICKS_FILE": str(marker),
        "TESTAPP_TICK_SECONDS": "60", "TESTAPP_PROGRESS_LIMIT": "1", "DAEMONS_STOP_TIMEOUT": "1",
    })
    try:
        wait_for(lambda: marker.exists(), message="a tick in progress")
        seen = time.monotonic()
        # The heartbeat period is 1 s (interval 0.2 s): hung 3 periods after the limit.
        status = wait_for(lambda: (r := project.manage("daemonstatus", "slow")).returncode == 4 and r,
                          timeout=30, message="daemonstatus to say hung")
        assert "hung" in status.stdout
        pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1"]
        assert any(t > seen for t in pings), "the tick had pings within its limit"
        last = pings[-1]
        # No ping since shortly after the limit, though pings were due every 0.1 s.
        assert last < seen + 1.0 + 0.5
        assert time.monotonic() - last > 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_notifier_parses_the_environment(tmp_path) -> None:
    assert not Notifier({}).enabled
    notifier = Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "3000000"})
    assert notifier.address == "\0abstract" and notifier.watchdog_interval == 1.5
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"}).watchdog_interval is None

"""The SMTP sink keeps its port while stopped: an outage test's server comes back on it, and nobody took it."""
from __future__ import annotations

import smtplib
import socket

import pytest

from tests.customers.conftest import SinkHandler, SmtpSink


def test_a_stopped_sink_refuses_connections_keeps_its_port_and_comes_back_on_it() -> None:
    sink = SmtpSink(SinkHandler())
    try:
        sink.start()
        sink.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sink.port), timeout=5).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", sink.port))  # another worker's server asking for this port
        with socket.socket() as other:  # the kernel never hands the reserved port out
            other.bind(("127.0.0.1", 0))
            assert other.getsockname()[1] != sink.port
        sink.start()
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as client:
            assert client.noop()[0] == 250
    finally:
        sink.close()

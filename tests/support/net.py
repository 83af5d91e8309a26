"""Loopback ports for the servers that tests and benchmarks start."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port free at the moment of asking; another process may take it before the caller binds it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts connections on loopback `port` now."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0

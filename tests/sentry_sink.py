"""A local Sentry DSN sink: an HTTP server on loopback that keeps the envelopes it gets."""
from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class SentrySink(ThreadingHTTPServer):
    """Receives what sentry-sdk sends, so tests read the real events; no network leaves the host."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SentryRequest)
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict]:
        """Every event item in the envelopes received so far."""
        found = []
        with self.lock:
            bodies = list(self.bodies)
        for body in bodies:
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found

    def raw(self) -> bytes:
        with self.lock:
            return b"\n".join(self.bodies)

    def __enter__(self) -> SentrySink:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _SentryRequest(BaseHTTPRequestHandler):
    server: SentrySink

    def do_POST(self) -> None:  # http.server calls it by this name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sentry_sink() -> Iterator[SentrySink]:
    with SentrySink() as sink:
        yield sink

"""A local Sentry DSN sink: an HTTP server on loopback that records the envelopes it gets."""
from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SentrySink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.record(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def record(self, body: bytes) -> None:
        # An envelope: a header line, then (item header, payload) line pairs.
        lines = body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2]):
            try:
                if json.loads(header).get("type") == "event":
                    self.events.append(json.loads(payload))
            except ValueError:
                continue

    def __enter__(self) -> SentrySink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A real gunicorn serving the site on a free loopback port, and a small HTTP client for it."""
from __future__ import annotations

import http.client
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

from tests.conftest import BASE_DIR, default_signals, matched
from tests.support.processes import terminate
from tests.support.waiting import wait_for

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                *, keep_cookies: bool = True) -> Response:
        """One request on a fresh connection (so threads never share one); no redirects followed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            all_headers = {"Host": "127.0.0.1", **(headers or {})}
            if self.cookies:
                all_headers.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
            conn.request(method, path, body=body, headers=all_headers)
            raw = conn.getresponse()
            response = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
        finally:
            conn.close()
        if keep_cookies:
            for header, value in raw.getheaders():
                if header.lower() == "set-cookie":
                    for name, morsel in SimpleCookie(value).items():
                        self.cookies[name] = morsel.value
        return response

    def csrf_token(self, headers: dict[str, str] | None = None) -> str:
        page = self.request("GET", "/", headers=headers)
        assert page.status == 200, page.text[:500]
        return matched(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text, group=1)


@contextmanager
def gunicorn(env: dict[str, str], log: Path, *, workers: int = 2, threads: int = 4) -> Iterator[Server]:
    """Run `gunicorn signup_site.wsgi` (the production command) until the block ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    process = subprocess.Popen(
        [GUNICORN, "signup_site.wsgi", "--bind", "127.0.0.1:0", "--workers", str(workers), "--threads", str(threads),
         "--graceful-timeout", "5", "--error-logfile", "-"],
        cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        preexec_fn=default_signals,
    )
    try:
        def listening() -> int | None:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
            # Up to the " (pid)" that ends the line: a line read while being written may hold half the port.
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+) \(", log.read_text())
            return int(match.group(1)) if match else None

        port = wait_for(listening, timeout=60, message="gunicorn to listen")
        server = Server(port=port, process=process, log=log)
        # The master listens before its workers boot; a page served proves one is up.
        wait_for(lambda: server.request("GET", "/", headers={"X-Forwarded-Proto": "https"}, keep_cookies=False).status
                 < 500, timeout=60, message="a gunicorn worker to answer")
        yield server
    finally:
        terminate(process, timeout=10)
        handle.close()

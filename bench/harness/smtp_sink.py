"""An SMTP server that accepts every message and keeps none: `python -m bench.harness.smtp_sink PORT`.

It prints "ready" once it listens and counts what it accepted, printing the count on SIGTERM.
"""
from __future__ import annotations

import signal
import sys
import threading


class Sink:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages += 1
        return "250 OK"


def main() -> None:
    from aiosmtpd.controller import Controller

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()
    print(f"accepted {sink.messages}", flush=True)


if __name__ == "__main__":
    main()

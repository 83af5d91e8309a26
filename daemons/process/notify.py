"""systemd's sd_notify protocol: one datagram per message on $NOTIFY_SOCKET."""
from __future__ import annotations

import os
import socket


class Notifier:
    """Sends READY=1, STATUS=, STOPPING=1 and WATCHDOG=1 to systemd when it is listening.

    Without $NOTIFY_SOCKET every method does nothing, so the daemon code calls them
    unconditionally. `watchdog_interval` is half of $WATCHDOG_USEC (in seconds), or None;
    `ping_period` is half of that again, so that a ping sent a little late still comes
    within half the watchdog interval of the last one.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if self.address and usec.isdigit() and int(usec) > 0 and watchdog_pid in ("", str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 2
        self._sock: socket.socket | None = None

    @property
    def ping_period(self) -> float | None:
        return self.watchdog_interval / 2 if self.watchdog_interval is not None else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> None:
        if self.address is None:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError:
            # systemd going away must never take the daemon down with it.
            pass

    def ready(self) -> None:
        self.send(f"READY=1\nMAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send("STATUS=" + " ".join(text.split())[:400])

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

"""A watch thread: keeps the heartbeat fresh during long ticks and enforces the stop deadline."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .heartbeat import heartbeat_period
from .runner import Runner


class Watch(threading.Thread):
    """Runs beside the main loop and never touches what the loop owns, except to end it.

    - While a tick runs longer than the heartbeat period, it marks the heartbeat row busy,
      so the row is fresh at least every 30 s.
    - Once a stop was requested (`stop_requested_at()` returns a time), it gives the work
      in progress `stop_timeout` seconds; past that it calls `abandon(description)`,
      which logs what was abandoned and ends the process non-zero.
    """

    POLL = 0.05

    def __init__(self, runner: Runner, *, stop_requested_at: Callable[[], float | None], stop_timeout: float,
                 abandon: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name=f"watch-{runner.daemon.name}", daemon=True)
        self.runner = runner
        self.stop_requested_at = stop_requested_at
        self.stop_timeout = stop_timeout
        self.abandon = abandon
        self.clock = clock
        self.done = threading.Event()
        self.logger = logging.getLogger(f"daemons.{runner.daemon.name}")

    def run(self) -> None:
        period = heartbeat_period(self.runner.daemon.interval_seconds())
        while not self.done.wait(self.POLL):
            started = self.runner.tick_started
            if started is not None and self.runner.heartbeat:
                last = self.runner.last_heartbeat_write
                if last is None or self.clock() - last >= period:
                    self.runner.write_heartbeat(in_thread=True)
            asked = self.stop_requested_at()
            if asked is not None and self.clock() - asked > self.stop_timeout:
                started = self.runner.tick_started
                work = self.runner.daemon.work_in_progress() if started is not None else ""
                running = f"a tick running for {self.clock() - started:.1f} s" if started is not None else "shutdown"
                self.abandon(f"{running}{': ' + work if work else ''}")
                return

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=2)

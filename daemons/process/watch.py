"""The watch thread: watchdog pings and busy heartbeats during a tick that makes progress, and the stop deadline."""
from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable

from daemons.cluster.heartbeat import heartbeat_period
from daemons.process.runner import Pulse, Runner
from daemons.process.signals import SelfPipe


class Watch(threading.Thread):
    """Runs beside the main loop and never touches what the loop owns, except to end it.

    - While a tick runs and makes progress (see `Pulse.making_progress`), it pings
      systemd's watchdog and marks the heartbeat row busy, with the units done so far, at
      least every heartbeat period. A tick without progress past `progress_limit` gets
      neither, so systemd restarts it and `daemonstatus` shows it hung.
    - Once a stop was requested (`stop_requested_at()` returns a time), it gives the work
      in progress `stop_timeout` seconds; past that it calls `abandon(description)`,
      which logs what was abandoned and ends the process non-zero.

    It never polls: it sleeps until the next thing is due, or until `bell` rings (the
    `pulse`: a tick started, a stalled tick made progress again; the stop's handler: a
    stop was requested; `finish()`). An idle daemon's watch thread sleeps from one tick's
    start to the next. The bell is the caller's: it exists before the watch and is rung
    from a signal handler, so the caller closes it once the handlers are gone.
    """

    def __init__(self, runner: Runner, *, pulse: Pulse, bell: SelfPipe,
                 stop_requested_at: Callable[[], float | None], stop_timeout: float,
                 abandon: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name=f"watch-{runner.daemon.name}", daemon=True)
        self.runner = runner
        self.pulse = pulse
        self.bell = bell
        self.stop_requested_at = stop_requested_at
        self.stop_timeout = stop_timeout
        self.abandon = abandon
        self.clock = clock
        self.done = False
        self.logger = logging.getLogger(f"daemons.{runner.daemon.name}")
        self.heartbeat_period = heartbeat_period(runner.daemon.interval_seconds())

    def next_due(self) -> float | None:
        """Seconds until the next ping, busy heartbeat or stop deadline; None if nothing is due."""
        runner, pulse, now = self.runner, self.pulse, self.clock()
        due: list[float] = []
        asked = self.stop_requested_at()
        if asked is not None:
            due.append(asked + self.stop_timeout)
        started = pulse.tick_started  # read once: the loop may end the tick meanwhile
        if started is not None and pulse.making_progress():
            due.append((pulse.last_progress or started) + pulse.progress_limit)
            if pulse.notifier.ping_period is not None:
                due.append((pulse.last_ping or now) + pulse.notifier.ping_period)
            if runner.heartbeat:
                due.append(self.busy_heartbeat_due(started))
        return max(0.0, min(due) - now) if due else None

    def busy_heartbeat_due(self, started: float) -> float:
        """When the tick that `started` needs a busy heartbeat: a period after its start or the last write.

        A tick shorter than a period never gets one; the loop writes the row after it.
        """
        return max(started, self.runner.last_heartbeat_write or started) + self.heartbeat_period

    def run(self) -> None:
        while not self.done:
            ready, _, _ = select.select([self.bell], [], [], self.next_due())
            if ready:
                self.bell.drain()
            if self.done:
                return
            self.look()

    def look(self) -> None:
        runner, pulse = self.runner, self.pulse
        started = pulse.tick_started
        if started is not None and pulse.making_progress():
            pulse.ping_if_due()
            if runner.heartbeat and self.clock() >= self.busy_heartbeat_due(started):
                runner.write_heartbeat(in_thread=True)
        asked = self.stop_requested_at()
        if asked is not None and self.clock() - asked >= self.stop_timeout:
            started = pulse.tick_started
            work = runner.daemon.work_in_progress() if started is not None else ""
            running = f"a tick running for {self.clock() - started:.1f} s" if started is not None else "shutdown"
            self.done = True
            self.abandon(f"{running}{': ' + work if work else ''}")

    def finish(self) -> None:
        self.done = True
        self.bell.ring()
        self.join(timeout=2)

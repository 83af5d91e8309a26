"""Daemons made for the framework's tests; they know nothing of customers."""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from daemons import Daemon, TickResult, register


def _interval() -> float:
    return float(os.environ.get("TESTAPP_INTERVAL", "5"))


@register
class CounterDaemon(Daemon):
    """Appends one line per tick to $TESTAPP_TICKS_FILE."""

    name = "counter"
    interval = _interval()

    def tick(self, now: datetime) -> TickResult:
        path = os.environ.get("TESTAPP_TICKS_FILE")
        if path:
            with open(path, "a") as handle:
                handle.write(f"{now.isoformat()}\n")
        return TickResult(processed=1, summary="counted 1 tick")

    def status(self) -> str:
        return "counting"


@register
class FailingDaemon(Daemon):
    """Raises on every tick."""

    name = "failing"
    interval = _interval()

    def tick(self, now: datetime) -> TickResult:
        raise RuntimeError("the failing daemon failed on purpose")


@register
class SlowDaemon(Daemon):
    """Each tick takes $TESTAPP_TICK_SECONDS, reports no progress and ignores stop requests meanwhile."""

    name = "slow"
    interval = _interval()
    progress_limit = float(os.environ.get("TESTAPP_PROGRESS_LIMIT", "300"))

    def work_in_progress(self) -> str:
        return "sleeping on purpose"

    def tick(self, now: datetime) -> TickResult:
        marker = os.environ.get("TESTAPP_TICKS_FILE")
        if marker:
            Path(marker).write_text("in tick\n")
        time.sleep(float(os.environ.get("TESTAPP_TICK_SECONDS", "1")))
        if marker:
            Path(marker).write_text("tick done\n")
        return TickResult(processed=1, summary="slept")


@register
class SteadyDaemon(Daemon):
    """The first tick does $TESTAPP_UNITS units of $TESTAPP_UNIT_SECONDS each, reporting progress per unit."""

    name = "steady"
    interval = _interval()
    progress_limit = float(os.environ.get("TESTAPP_PROGRESS_LIMIT", "300"))

    def setup(self) -> None:
        self.done = False

    def tick(self, now: datetime) -> TickResult:
        if self.done:
            return TickResult()
        self.done = True
        marker = os.environ.get("TESTAPP_TICKS_FILE")
        if marker:
            Path(marker).write_text("in tick\n")
        units = int(os.environ.get("TESTAPP_UNITS", "10"))
        for _ in range(units):
            time.sleep(float(os.environ.get("TESTAPP_UNIT_SECONDS", "0.03")))
            self.progress()
        if marker:
            Path(marker).write_text("tick done\n")
        return TickResult(processed=units, summary=f"did {units} units")


@register
class IdleDaemon(Daemon):
    """Never has work: every tick is an idle tick, logged at DEBUG."""

    name = "idle"
    interval = _interval()

    def tick(self, now: datetime) -> TickResult:
        return TickResult()


class Fatal(BaseException):
    """Not an Exception: escapes the tick guard like a bug in the framework would."""


@register
class CrashingDaemon(Daemon):
    """Crashes the process on its second tick."""

    name = "crashing"
    interval = _interval()
    ticks = 0

    def tick(self, now: datetime) -> TickResult:
        CrashingDaemon.ticks += 1
        if CrashingDaemon.ticks >= 2:
            raise Fatal("the crashing daemon crashed on purpose")
        return TickResult()


@register
class WriterDaemon(Daemon):
    """Takes the database's write lock on every tick, so a locked SQLite file stops it."""

    name = "writer"
    interval = _interval()

    def tick(self, now: datetime) -> TickResult:
        from django.db import transaction

        from daemons.models import Heartbeat

        with transaction.atomic():
            Heartbeat.objects.filter(name="").update(pid=0)
        return TickResult()


@register
class StubbornDaemon(Daemon):
    """Each tick takes $TESTAPP_TICK_SECONDS and goes on after a stop request, which it notes in
    $TESTAPP_TICKS_FILE ("stop requested"): a test knows the first stop is under way, without a sleep."""

    name = "stubborn"
    interval = _interval()

    def work_in_progress(self) -> str:
        return "ignoring the stop on purpose"

    def tick(self, now: datetime) -> TickResult:
        if not os.environ.get("TESTAPP_TICKS_FILE"):
            return TickResult()  # started with the others (rundaemon --all): never in the way of a stop
        marker = Path(os.environ["TESTAPP_TICKS_FILE"])
        marker.write_text("in tick\n")
        end = time.monotonic() + float(os.environ.get("TESTAPP_TICK_SECONDS", "60"))
        noted = False
        while time.monotonic() < end:
            if not noted and self.stop_requested():
                with marker.open("a") as handle:
                    handle.write("stop requested\n")
                noted = True
            time.sleep(0.02)
        with marker.open("a") as handle:
            handle.write("tick done\n")
        return TickResult(processed=1, summary="slept")


@register
class HeldSetupDaemon(Daemon):
    """With $TESTAPP_RELEASE_FILE set, its setup() writes its PID to $TESTAPP_TICKS_FILE, then waits until
    that file exists: a test holds the daemon before it reports ready (to kill it there, say)."""

    name = "heldsetup"
    interval = _interval()

    def setup(self) -> None:
        if not os.environ.get("TESTAPP_RELEASE_FILE"):
            return  # started with the others (rundaemon --all): nothing to wait for
        Path(os.environ["TESTAPP_TICKS_FILE"]).write_text(f"{os.getpid()}\n")
        release = Path(os.environ["TESTAPP_RELEASE_FILE"])
        deadline = time.monotonic() + 300
        while not release.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{release} never appeared")
            time.sleep(0.02)

    def tick(self, now: datetime) -> TickResult:
        return TickResult()

from __future__ import annotations

import logging
import threading
from datetime import datetime

import pytest
from django.db import connection

from daemons import Daemon, TickResult
from daemons.models import Heartbeat
from daemons.process.runner import Runner


class Scripted(Daemon):
    """Runs a list of tick behaviours, then asks the loop to stop."""

    name = "scripted"
    interval = 0

    def __init__(self, steps, stop: threading.Event) -> None:
        super().__init__()
        self.steps = list(steps)
        self.stop = stop
        self.seen: list[datetime] = []

    def tick(self, now: datetime) -> TickResult:
        self.seen.append(now)
        step = self.steps.pop(0)
        if not self.steps:
            self.stop.set()
        if isinstance(step, Exception):
            raise step
        return step

    def status(self) -> str:
        return f"{len(self.steps)} steps left"


pytestmark = pytest.mark.django_db(transaction=True)


def test_once_runs_exactly_one_tick_with_the_given_time(stop_event, clock, fixed_now) -> None:
    daemon = Scripted([TickResult(1), TickResult(1)], stop_event)
    Runner(daemon, clock=clock, now=lambda: fixed_now).run(stop_event, once=True)
    assert daemon.seen == [fixed_now]


def test_an_exception_in_tick_is_logged_counted_and_the_loop_goes_on(stop_event, clock, fixed_now, caplog) -> None:
    daemon = Scripted([RuntimeError("boom"), TickResult(2, "did 2 things")], stop_event)
    runner = Runner(daemon, clock=clock, now=lambda: fixed_now)
    with caplog.at_level(logging.DEBUG, logger="daemons"):
        runner.run(stop_event)
    assert len(daemon.seen) == 2
    assert runner.counters.errors == 1 and runner.counters.processed == 2
    [error] = [r for r in caplog.records if getattr(r, "action", None) == "tick_error"]
    assert error.levelno == logging.ERROR and error.exc_info[1].args == ("boom",)
    [done] = [r for r in caplog.records if getattr(r, "action", None) == "tick_done"]
    assert done.levelno == logging.INFO and done.getMessage().startswith("did 2 things in ")


def test_idle_tick_logs_at_debug(stop_event, clock, fixed_now, caplog) -> None:
    daemon = Scripted([TickResult(0)], stop_event)
    with caplog.at_level(logging.DEBUG, logger="daemons"):
        Runner(daemon, clock=clock, now=lambda: fixed_now).run(stop_event)
    [idle] = [r for r in caplog.records if getattr(r, "action", None) == "tick_idle"]
    assert idle.levelno == logging.DEBUG


def test_heartbeat_row_records_counters_and_status(stop_event, clock, fixed_now) -> None:
    daemon = Scripted([TickResult(3), ValueError("bad row")], stop_event)
    Runner(daemon, clock=clock, now=lambda: fixed_now).run(stop_event)
    beat = Heartbeat.objects.get(name="scripted")
    assert (beat.processed, beat.errors, beat.last_outcome) == (3, 1, "error")
    assert beat.last_error == "ValueError: bad row"
    assert beat.last_tick_at == fixed_now and beat.status_text == "0 steps left"


def test_waits_on_the_stop_event_not_sleep(clock, fixed_now) -> None:
    """With a 1 h interval, a stop set from another thread ends the wait at once."""

    class Idle(Daemon):
        name = "idle"
        interval = 3600

        def tick(self, now):
            return TickResult()

    stop = threading.Event()
    runner = Runner(Idle(), clock=clock, now=lambda: fixed_now, heartbeat=False)
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_query_log_never_grows_with_debug_on(settings, stop_event, clock, fixed_now) -> None:
    settings.DEBUG = True

    class Querying(Daemon):
        name = "querying"
        interval = 0
        ticks = 0

        def tick(self, now):
            Heartbeat.objects.count()
            Querying.ticks += 1
            if Querying.ticks == 50:
                stop_event.set()
            return TickResult()

    Runner(Querying(), clock=clock, now=lambda: fixed_now).run(stop_event)
    assert len(connection.queries) < 10


def test_the_daemon_is_handed_its_stop_and_progress_api(stop_event) -> None:
    from daemons.daemon import Control

    class Worker(Daemon):
        name = "worker"

        def tick(self, now):
            return TickResult()

    control = Control(stop_event)
    daemon = Worker(3, control)
    assert daemon.instance == 3 and daemon.control is control
    assert "stop_requested" not in vars(daemon) and "progress" not in vars(daemon)
    assert not daemon.stop_requested()
    stop_event.set()
    assert daemon.stop_requested()
    daemon.progress()
    daemon.progress(4)
    assert control.units == 5 and control.last_progress is not None
    # A daemon built without one (a test, a shell) gets a Control that never stops.
    assert not Worker().stop_requested()
    assert Worker().logger.name == "tests.daemons.worker"


def test_progress_reaches_the_pulse_which_rings_the_watch_when_a_stalled_tick_moves_again(clock) -> None:
    """The wiring a process builds (`DaemonService.wire`): Control -> Pulse -> the watch thread's bell."""
    from daemons.daemon import Control
    from daemons.process.notify import Notifier
    from daemons.process.runner import Pulse

    rings: list[str] = []
    pulse = Pulse(Notifier({}), 10.0, ring=lambda: rings.append("ring"), clock=clock)
    control = Control(clock=clock, on_progress=pulse.progress)
    pulse.tick_began(clock())
    assert rings == ["ring"]  # a tick began: the watch schedules its pings
    clock.advance(5)
    control.progress()
    assert rings == ["ring"] and pulse.making_progress()
    clock.advance(11)
    assert not pulse.making_progress()  # hung: the watch stopped pinging
    control.progress()
    assert rings == ["ring", "ring"] and pulse.making_progress()
    pulse.tick_ended()
    assert pulse.tick_started is None

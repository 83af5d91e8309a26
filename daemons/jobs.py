"""Several scheduled jobs in one daemon: `@job(every=...)` or `@job(cron=...)` methods of a `ScheduledDaemon`."""
from __future__ import annotations

import dataclasses
import logging
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings

from . import reporting, schedule
from .base import Daemon, TickResult

JobMethod = Callable[[Any, datetime], "int | TickResult | None"]


@dataclass(frozen=True)
class JobSpec:
    """A job as declared: its name, its method, its schedule and whether it catches up."""

    name: str
    method: JobMethod
    every: timedelta | None = None
    jitter: timedelta = timedelta(0)
    cron: str | None = None
    tz: str | None = None
    catch_up: bool = False

    def schedule(self) -> schedule.Schedule:
        """The job's schedule; a cron job without a `tz` uses settings.TIME_ZONE."""
        if self.cron is not None:
            return schedule.cron(self.cron, self.tz or settings.TIME_ZONE)
        assert self.every is not None
        return schedule.Every(self.every, self.jitter)


def job(*, every: str | timedelta | float | None = None, cron: str | None = None, tz: str | None = None,
        jitter: str | timedelta | float | None = None, catch_up: bool = False,
        name: str | None = None) -> Callable[[JobMethod], JobMethod]:
    """Declare a method `(self, now) -> int | TickResult | None` of a ScheduledDaemon as a job.

    Give exactly one of `every` ("30s", "5m", a timedelta or seconds, with optional
    `jitter`) or `cron` (a cron expression, read in `tz`, default settings.TIME_ZONE).
    With `catch_up=True` a run missed while the daemon was down runs once at startup;
    otherwise it is skipped. The method returns how many units of work it did.
    A bad schedule raises ValueError when the class is defined, not at 08:00.
    """
    if (every is None) == (cron is None):
        raise ValueError("a job needs exactly one of every= or cron=")
    if jitter is not None and cron is not None:
        raise ValueError("jitter= applies to every= jobs only")
    period = schedule.parse_interval(every) if every is not None else None
    spread = schedule.parse_interval(jitter) if jitter else timedelta(0)
    if cron is not None:
        schedule.cron(cron, tz or "UTC")  # validates; the zone is resolved when the daemon runs

    def decorate(method: JobMethod) -> JobMethod:
        method._daemon_job = JobSpec(  # type: ignore[attr-defined]
            name=name or method.__name__, method=method, every=period, jitter=spread, cron=cron, tz=tz,
            catch_up=catch_up,
        )
        return method

    return decorate


@dataclass
class JobState:
    """One job's place in its schedule and its counters, in the daemon process."""

    spec: JobSpec
    schedule: schedule.Schedule
    slot: datetime  # when the next run is due, before jitter
    due: datetime
    last_run_at: datetime | None = None
    runs: int = 0
    errors: int = 0
    last_error: str = ""


class ScheduledDaemon(Daemon):
    """A daemon whose tick runs whichever of its `@job` methods are due.

    The runner ticks it every `interval` seconds (1 s by default, the resolution of its
    schedules); each tick asks `now` which jobs are due, one after the other, so a job
    never overlaps itself. Each job has its own error guard: an exception is logged
    (action `job_error`), reported to Sentry and counted, and the other jobs still run.
    Each job's last run and counters are kept in `daemons.models.JobRun`, so a run
    missed while the daemon was down can be caught up at startup and `daemonstatus`
    shows every job.
    """

    interval: ClassVar[float | timedelta] = 1.0
    jobs: ClassVar[dict[str, JobSpec]] = {}
    monotonic: ClassVar[Callable[[], float]] = staticmethod(time.monotonic)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, JobSpec] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                spec = getattr(value, "_daemon_job", None)
                if isinstance(spec, JobSpec):
                    found[spec.name] = spec
        cls.jobs = found

    def __init__(self, instance: int = 0, *, rng: random.Random | None = None) -> None:
        super().__init__(instance)
        self.logger = logging.getLogger(f"daemons.{self.name}")
        self.rng = rng or random.Random()
        self.states: dict[str, JobState] | None = None

    # --- the tick ---------------------------------------------------------------------

    def tick(self, now: datetime) -> TickResult:
        """Run every job due at `now`, in declaration order; return the work they did."""
        if self.states is None:
            self.states = self.load_states(now)
        processed = 0
        ran: list[str] = []
        for state in self.states.values():
            if state.due > now:
                continue
            if self.stop_requested():
                break
            processed += self.run_job(state, now)
            ran.append(state.spec.name)
        if not ran:
            return TickResult()
        return TickResult(processed=processed, summary=f"ran {', '.join(ran)}: processed {processed}")

    def run_job(self, state: JobState, now: datetime) -> int:
        """Run one job under its own guard; schedule its next run; return its units of work."""
        spec = state.spec
        began = self.monotonic()
        processed = 0
        error: BaseException | None = None
        try:
            result = spec.method(self, now)
        except Exception as exc:
            error = exc
        else:
            processed = result.processed if isinstance(result, TickResult) else int(result or 0)
        elapsed = timedelta(seconds=max(0.0, self.monotonic() - began))
        finished = now + elapsed
        duration_ms = int(elapsed.total_seconds() * 1000)
        state.runs += 1
        state.last_run_at = now
        extra: dict[str, object] = {"job": spec.name, "duration_ms": duration_ms}
        if error is not None:
            state.errors += 1
            state.last_error = "".join(traceback.format_exception_only(error)).strip()
            self.logger.exception("job %s failed after %d ms", spec.name, duration_ms,
                                  extra={"action": "job_error", **extra}, exc_info=error)
            reporting.capture(error, daemon=self.name, job=spec.name)
        else:
            self.logger.info("job %s processed %d in %d ms", spec.name, processed, duration_ms,
                             extra={"action": "job_done", "processed": processed, **extra})
        # The next slot counts from the slot this run was due at, so runs don't drift.
        state.slot = schedule.next_run(dataclasses.replace(state.schedule, jitter=timedelta(0))
                                       if isinstance(state.schedule, schedule.Every) else state.schedule,
                                       min(state.slot, now), finished)
        state.due = self._jittered(state)
        self.save_run(state, finished=finished, duration_ms=duration_ms, error=error)
        return processed

    def _jittered(self, state: JobState) -> datetime:
        sched = state.schedule
        if isinstance(sched, schedule.Every) and sched.jitter:
            return state.slot + timedelta(seconds=self.rng.uniform(0, sched.jitter.total_seconds()))
        return state.slot

    # --- persistence --------------------------------------------------------------------

    def load_states(self, now: datetime) -> dict[str, JobState]:
        """Read each job's last run and decide, at `now`, whether a missed run is caught up.

        A database error propagates: the runner logs it and the next tick tries again,
        so no catch-up decision is made without knowing the last run.
        """
        from .models import JobRun

        rows = {row.job: row for row in JobRun.objects.filter(daemon=self.name)}
        states: dict[str, JobState] = {}
        for spec in self.jobs.values():
            row = rows.get(spec.name)
            sched = spec.schedule()
            last = row.last_run_at if row is not None else None
            unjittered = dataclasses.replace(sched, jitter=timedelta(0)) if isinstance(sched, schedule.Every) else sched
            decision = schedule.startup(unjittered, last, now, catch_up=spec.catch_up)
            state = JobState(spec=spec, schedule=sched, slot=decision.due, due=decision.due, last_run_at=last,
                             runs=row.runs if row else 0, errors=row.errors if row else 0,
                             last_error=row.last_error if row else "")
            if decision.action != "catch_up":
                state.due = self._jittered(state)
            if decision.action == "catch_up":
                self.logger.info("job %s missed its run at %s; catching up now", spec.name,
                                 decision.missed.isoformat() if decision.missed else "-",
                                 extra={"action": "job_catch_up", "job": spec.name})
            elif decision.action == "skip":
                self.logger.info("job %s missed its run at %s; skipped, next at %s", spec.name,
                                 decision.missed.isoformat() if decision.missed else "-", state.due.isoformat(),
                                 extra={"action": "job_skipped", "job": spec.name})
            states[spec.name] = state
            self._store(spec.name, {"next_run_at": state.due})
        return states

    def save_run(self, state: JobState, *, finished: datetime, duration_ms: int,
                 error: BaseException | None) -> None:
        values: dict[str, object] = {
            "last_run_at": state.last_run_at,
            "last_finished_at": finished,
            "last_outcome": "error" if error is not None else "ok",
            "last_duration_ms": duration_ms,
            "next_run_at": state.due,
            "runs": state.runs,
            "errors": state.errors,
        }
        if error is not None:
            values.update(last_error=state.last_error[:2000], last_error_at=finished)
        self._store(state.spec.name, values)

    def _store(self, job_name: str, values: dict[str, object]) -> None:
        """Write a job's row; a DB error is logged, the schedule in memory goes on."""
        from .models import JobRun

        try:
            JobRun.objects.update_or_create(daemon=self.name, job=job_name, defaults=values)
        except Exception:
            self.logger.warning("could not record job %s", job_name, exc_info=True,
                                extra={"action": "job_record_failed", "job": job_name})

    # --- status -------------------------------------------------------------------------

    def status(self) -> str:
        """One part per job: runs, errors, last and next run (read from the database).

        `daemonstatus` calls this in its own process, so it reads the rows the running
        daemon wrote rather than this object's memory.
        """
        from .models import JobRun

        rows = {row.job: row for row in JobRun.objects.filter(daemon=self.name)}
        parts = []
        for spec in self.jobs.values():
            row = rows.get(spec.name)
            if row is None:
                parts.append(f"{spec.name}: never ran")
                continue
            text = f"{spec.name}: {row.runs} runs, {row.errors} errors"
            if row.last_run_at:
                text += f", last {_short(row.last_run_at)}"
                if row.last_outcome == "error":
                    text += " failed"
            if row.next_run_at:
                text += f", next {_short(row.next_run_at)}"
            parts.append(text)
        return "; ".join(parts)


def _short(moment: datetime) -> str:
    from django.utils import timezone

    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")

"""Several scheduled jobs in one daemon: `@job(every=...)` or `@job(cron=...)` methods of a `ScheduledDaemon`."""
from __future__ import annotations

import dataclasses
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypedDict, TypeVar

from django.conf import settings
from django.utils import timezone

from daemons.cluster.control import claim_run_requests
from daemons.daemon import Control, Daemon, TickResult
from daemons.process import reporting
from daemons.process.exits import Outcome
from daemons.scheduling import schedule
from daemons.scheduling.schedule import Schedule

JobMethod = Callable[[Any, datetime], "int | TickResult | None"]
# A job method keeps its own signature through @job, so an override can call it as declared.
JobMethodT = TypeVar("JobMethodT", bound=JobMethod)


@dataclass(frozen=True)
class JobSpec:
    """A job as declared: its name, its method, its schedule and whether it catches up."""

    name: str
    method: JobMethod
    every: timedelta | None = None
    jitter: timedelta = timedelta(0)
    cron: str | None = None
    tz: str | None = None
    catch_up: bool = True
    retry: timedelta | None = timedelta(seconds=10)

    def schedule(self) -> Schedule:
        """The job's schedule; a cron job without a `tz` uses settings.TIME_ZONE."""
        if self.cron is not None:
            return schedule.cron(self.cron, self.tz or settings.TIME_ZONE)
        assert self.every is not None
        return schedule.Every(self.every, self.jitter)

    def grid(self) -> Schedule:
        """The schedule without jitter: the times runs are due at, before each is delayed."""
        if self.cron is not None:
            return self.schedule()
        assert self.every is not None
        return schedule.Every(self.every)


def job(*, every: str | timedelta | float | None = None, cron: str | None = None, tz: str | None = None,
        jitter: str | timedelta | float | None = None, catch_up: bool = True,
        retry: str | timedelta | float | None = "10s", name: str | None = None) -> Callable[[JobMethodT], JobMethodT]:
    """Declare a method `(self, now) -> int | TickResult | None` of a ScheduledDaemon as a job.

    Give exactly one of `every` ("30s", "5m", a timedelta or seconds, with optional
    `jitter`) or `cron` (a cron expression, read in `tz`, default settings.TIME_ZONE).
    A run missed while the daemon was down runs once at startup; `catch_up=False` skips
    it instead. A run that raises is tried again after `retry` (doubling on each failure,
    up to `schedule.RETRY_MAX_DELAY`) until it succeeds or its next scheduled time comes;
    `retry=None` waits for that time. The method returns how many units of work it did.
    A bad schedule raises ValueError when the class is defined, not at 08:00.
    """
    if (every is None) == (cron is None):
        raise ValueError("a job needs exactly one of every= or cron=")
    if jitter is not None and cron is not None:
        raise ValueError("jitter= applies to every= jobs only")
    period = schedule.parse_interval(every) if every is not None else None
    spread = schedule.parse_interval(jitter) if jitter else timedelta(0)
    retry_delay = schedule.parse_interval(retry) if retry is not None else None
    if cron is not None:
        schedule.cron(cron, tz or "UTC")  # validates; the zone is resolved when the daemon runs

    def decorate(method: JobMethodT) -> JobMethodT:
        method._daemon_job = JobSpec(  # type: ignore[attr-defined]
            name=name or method.__name__, method=method, every=period, jitter=spread, cron=cron, tz=tz,
            catch_up=catch_up, retry=retry_delay,
        )
        return method

    return decorate


class _Counters(TypedDict, total=False):
    """A job's recorded counters, as JobState takes them; empty for a job never run."""

    runs: int
    errors: int
    last_error: str


@dataclass
class JobState:
    """One job's place in its schedule and its counters, in the daemon process."""

    spec: JobSpec
    schedule: Schedule
    slot: datetime  # the scheduled time the next run is for, before jitter
    due: datetime  # when the next run starts: the slot with jitter, or a retry
    attempt: int = 1  # the next run's try for its slot: 1, or more for a retry
    last_run_at: datetime | None = None
    runs: int = 0
    errors: int = 0
    last_error: str = ""


class ScheduledDaemon(Daemon):
    """A daemon whose tick runs whichever of its `@job` methods are due.

    The runner ticks it every `interval` seconds (1 s by default, the resolution of its
    schedules); each tick asks `now` which jobs are due, one after the other, so a job
    never overlaps itself. Each job has its own error guard: an exception is logged
    (action `job_error`), reported to Sentry and counted, the run is retried with backoff,
    and the other jobs still run. Each job's last run (its outcome, error and try) and
    counters are kept in `daemons.models.JobRun`, so a run missed or left to retry while
    the daemon was down runs once at startup, and `daemonstatus` shows every job.
    """

    interval: ClassVar[float | timedelta] = 1.0
    jobs: ClassVar[dict[str, JobSpec]] = {}
    monotonic: Callable[[], float] = staticmethod(time.monotonic)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, JobSpec] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                spec = getattr(value, "_daemon_job", None)
                if isinstance(spec, JobSpec):
                    found[spec.name] = spec
        cls.jobs = found

    def __init__(self, instance: int = 0, control: Control | None = None, *, rng: random.Random | None = None) -> None:
        super().__init__(instance, control)
        self.rng = rng or random.Random()
        self.states: dict[str, JobState] | None = None

    # --- the tick ---------------------------------------------------------------------

    def tick(self, now: datetime) -> TickResult:
        """Run every job due at `now`, in declaration order; return the work they did."""
        if self.states is None:
            self.states = self.load_states(now)
        processed = 0
        ran: list[str] = []
        requested = claim_run_requests(self.name)  # "run now" from the dashboard
        for state in self.states.values():
            if state.due > now and state.spec.name not in requested:
                continue
            if self.stop_requested():
                break
            processed += self.run_job(state, now)
            ran.append(state.spec.name)
        if not ran:
            return TickResult()
        return TickResult(processed=processed, summary=f"ran {', '.join(ran)}: processed {processed}")

    def run_job(self, state: JobState, now: datetime) -> int:
        """Run one job under its own guard; schedule its next run or retry; return its units of work."""
        spec = state.spec
        slot, attempt = state.slot, state.attempt
        began = self.monotonic()
        processed = 0
        error: BaseException | None = None
        try:
            result = spec.method(self, now)
        except Exception as exc:  # noqa: BLE001 - a job's error is logged, recorded and retried
            error = exc
        else:
            processed = result.processed if isinstance(result, TickResult) else int(result or 0)
        elapsed = timedelta(seconds=max(0.0, self.monotonic() - began))
        finished = now + elapsed
        duration_ms = int(elapsed.total_seconds() * 1000)
        state.runs += 1
        state.last_run_at = now
        # The next slot counts from the slot this run was due at, so runs don't drift.
        upcoming = schedule.next_run(spec.grid(), min(slot, now), finished)
        retry = None
        if error is not None and spec.retry is not None:
            retry = schedule.retry_at(finished, attempt, spec.retry, upcoming)
        if retry is not None:
            state.attempt, state.due = attempt + 1, retry
        else:
            state.attempt, state.slot = 1, upcoming
            state.due = self._jittered(state)
        extra: dict[str, object] = {"job": spec.name, "duration_ms": duration_ms, "attempt": attempt}
        if error is not None:
            state.errors += 1
            state.last_error = "".join(traceback.format_exception_only(error)).strip()
            self.logger.exception("job %s failed (try %d) after %d ms; %s at %s", spec.name, attempt, duration_ms,
                                  "retrying" if retry else "next run", state.due.isoformat(),
                                  extra={"action": "job_error", "retry_at": retry, **extra}, exc_info=error)
            reporting.capture(error, daemon=self.name, job=spec.name)
        else:
            self.logger.info("job %s processed %d in %d ms", spec.name, processed, duration_ms,
                             extra={"action": "job_done", "processed": processed, **extra})
        self.save_run(state, slot=slot, attempt=attempt, finished=finished, duration_ms=duration_ms, error=error)
        return processed

    def _jittered(self, state: JobState) -> datetime:
        return schedule.jittered(state.schedule, state.slot, self.rng)

    # --- persistence --------------------------------------------------------------------

    def load_states(self, now: datetime) -> dict[str, JobState]:
        """Read each job's last run and decide, at `now`, whether a missed run is caught up.

        A database error propagates: the runner logs it and the next tick tries again,
        so no catch-up decision is made without knowing the last run.
        """
        from daemons.models import JobRun

        rows = {row.job: row for row in JobRun.objects.filter(daemon=self.name)}
        states: dict[str, JobState] = {}
        for spec in self.jobs.values():
            row = rows.get(spec.name)
            sched = spec.schedule()
            last = row.last_run_at if row is not None else None
            counters: _Counters = {"runs": row.runs, "errors": row.errors, "last_error": row.last_error} if row else {}
            retry = _recorded_retry(spec, row, now)
            if retry is not None:
                assert row is not None and row.scheduled_for is not None
                state = JobState(spec=spec, schedule=sched, slot=row.scheduled_for, due=retry,
                                 attempt=row.attempt + 1, last_run_at=last, **counters)
                self.logger.info("job %s failed its run of %s before the restart; retrying at %s", spec.name,
                                 row.scheduled_for.isoformat(), retry.isoformat(),
                                 extra={"action": "job_retry_resumed", "job": spec.name})
                states[spec.name] = state
                self._store(spec.name, {"next_run_at": state.due})
                continue
            decision = schedule.startup(spec.grid(), last, now, catch_up=spec.catch_up)
            state = JobState(spec=spec, schedule=sched, slot=decision.due, due=decision.due, last_run_at=last,
                             **counters)
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

    def save_run(self, state: JobState, *, slot: datetime, attempt: int, finished: datetime, duration_ms: int,
                 error: BaseException | None) -> None:
        """Record one run: the scheduled time it was for, its try, outcome, error and duration."""
        values: dict[str, object] = {
            "last_run_at": state.last_run_at,
            "scheduled_for": slot,
            "attempt": attempt,
            "last_finished_at": finished,
            "last_outcome": Outcome.ERROR if error is not None else Outcome.OK,
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
        from daemons.models import JobRun

        try:
            JobRun.objects.update_or_create(daemon=self.name, job=job_name, defaults=values)
        except Exception:
            self.logger.warning("could not record job %s", job_name, exc_info=True,
                                extra={"action": "job_record_failed", "job": job_name})

    # --- status -------------------------------------------------------------------------

    def job_statuses(self, now: datetime | None = None) -> list[JobStatus]:
        """Each job's schedule, last run and next run or retry, read from the database.

        `daemonstatus` calls this in its own process, so it reads the rows the running
        daemon wrote rather than this object's memory. A job that never ran has no row:
        its counters are zero and its times None.
        """
        from daemons.models import JobRun

        now = now or timezone.now()
        rows = {row.job: row for row in JobRun.objects.filter(daemon=self.name)}
        found = []
        for spec in self.jobs.values():
            row = rows.get(spec.name)
            job_status = JobStatus(name=spec.name, schedule=str(spec.schedule()))
            if row is not None:
                job_status = dataclasses.replace(
                    job_status, runs=row.runs, errors=row.errors, last_run_at=row.last_run_at,
                    scheduled_for=row.scheduled_for, attempt=row.attempt, last_outcome=row.last_outcome,
                    last_duration_ms=row.last_duration_ms, last_error=row.last_error,
                    next_run_at=row.next_run_at, retrying=_recorded_retry(spec, row, now) is not None)
            found.append(job_status)
        return found

    def status(self) -> str:
        """One part per job: runs, errors, last and next run (see `job_statuses`)."""
        parts = []
        for job_status in self.job_statuses():
            if not job_status.runs and job_status.next_run_at is None:
                parts.append(f"{job_status.name}: never ran")
                continue
            text = f"{job_status.name}: {job_status.runs} runs, {job_status.errors} errors"
            if job_status.last_run_at:
                text += f", last {_short(job_status.last_run_at)}"
                if job_status.last_outcome == Outcome.ERROR:
                    text += " failed"
            if job_status.next_run_at:
                text += f", {'retry' if job_status.retrying else 'next'} {_short(job_status.next_run_at)}"
            parts.append(text)
        return "; ".join(parts)


@dataclass(frozen=True)
class JobStatus:
    """One job as `daemonstatus` shows it: its schedule, its last run and what comes next."""

    name: str
    schedule: str
    runs: int = 0
    errors: int = 0
    last_run_at: datetime | None = None
    scheduled_for: datetime | None = None  # the scheduled time the last run was for
    attempt: int = 0  # the last run's try for that time
    last_outcome: Outcome | str = ""  # "" before the first run
    last_duration_ms: int | None = None
    last_error: str = ""
    next_run_at: datetime | None = None
    retrying: bool = False  # next_run_at is a retry of the failed run, not the next scheduled one


def _recorded_retry(spec: JobSpec, row: Any, now: datetime) -> datetime | None:
    """When the retry of a failed run that `row` records is due at `now`, or None if none is pending."""
    if row is None or row.last_outcome != Outcome.ERROR:
        return None
    return schedule.pending_retry(spec.grid(), row.scheduled_for, row.next_run_at, now)


def _short(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")

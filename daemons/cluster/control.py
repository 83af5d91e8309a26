"""An operator's orders to running daemons, kept in the database: pause, resume, run a job now."""
from __future__ import annotations

import logging

from django.db import DatabaseError, transaction
from django.utils import timezone

from daemons.models import Pause, RunRequest

logger = logging.getLogger("daemons.control")


def pause(name: str, instance: int = 0, *, by: str = "") -> bool:
    """Pause daemon `name` instance `instance` on every host; False if it already was paused.

    The runner checks `is_paused()` before each tick, so the daemon stops ticking within
    one interval; it stays up and keeps writing heartbeats.
    """
    _, created = Pause.objects.get_or_create(name=name, instance=instance,
                                             defaults={"paused_at": timezone.now(), "paused_by": by})
    return created


def resume(name: str, instance: int = 0) -> bool:
    """Let a paused instance tick again; False if it wasn't paused."""
    deleted, _ = Pause.objects.filter(name=name, instance=instance).delete()
    return bool(deleted)


def is_paused(name: str, instance: int = 0) -> bool:
    """True while an operator has instance `instance` of daemon `name` paused. One indexed query.

    A database error reads as not paused: the tick that follows meets the same error and
    the runner's outage handling takes over.
    """
    try:
        return Pause.objects.filter(name=name, instance=instance).exists()
    except DatabaseError:
        return False


def paused() -> set[tuple[str, int]]:
    """Every paused (name, instance), for status tables. One query."""
    return set(Pause.objects.values_list("name", "instance"))


def request_run(daemon: str, job: str, *, by: str = "") -> bool:
    """Ask daemon `daemon` to run `job` at its next tick; False if a request is already waiting."""
    _, created = RunRequest.objects.get_or_create(daemon=daemon, job=job,
                                                  defaults={"requested_at": timezone.now(), "requested_by": by})
    return created


def claim_run_requests(daemon: str) -> set[str]:
    """The jobs of `daemon` an operator asked to run now, removed so each request runs once.

    A scheduled daemon calls this at the start of each tick (one query when there is
    none). A database error returns no job; the requests stay for a later tick.
    """
    try:
        if not RunRequest.objects.filter(daemon=daemon).exists():
            return set()
        with transaction.atomic():
            # Locked, so two instances of one daemon never both claim a request.
            jobs = set(RunRequest.objects.select_for_update().filter(daemon=daemon).values_list("job", flat=True))
            RunRequest.objects.filter(daemon=daemon, job__in=jobs).delete()
        return jobs
    except DatabaseError as exc:
        logger.warning("could not read run-now requests: %s", exc, extra={"action": "run_requests_failed"})
        return set()


def pending_runs() -> set[tuple[str, str]]:
    """Every (daemon, job) with a run-now request waiting. One query."""
    return set(RunRequest.objects.values_list("daemon", "job"))

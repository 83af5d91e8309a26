"""Heartbeat rows: the cluster-wide view of which daemon runs where and how it is doing."""
from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """One row per daemon instance and host, written by the daemon after its ticks."""

    name = models.CharField(max_length=100)
    instance = models.PositiveIntegerField(default=0)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    last_tick_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=20, blank=True)  # "ok", "idle" or "error"
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    processed = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    status_text = models.CharField(max_length=500, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "instance", "host"], name="daemons_heartbeat_unique_instance")
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.instance}]@{self.host} pid {self.pid}"


class JobRun(models.Model):
    """The last run (outcome, error, try) and the counters of one scheduled job.

    Kept so that catch-up and a pending retry survive a restart.
    """

    daemon = models.CharField(max_length=100)
    job = models.CharField(max_length=100)
    last_run_at = models.DateTimeField(null=True, blank=True)  # when the last run started
    scheduled_for = models.DateTimeField(null=True, blank=True)  # the scheduled time the last run was for
    attempt = models.PositiveIntegerField(default=0)  # the last run's try for that time: 1, or more for a retry
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=20, blank=True)  # "ok" or "error"
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["daemon", "job"], name="daemons_jobrun_unique_job")]

    def __str__(self) -> str:
        return f"{self.daemon}.{self.job}"


class Pause(models.Model):
    """A daemon instance an operator paused: while the row exists, the runner skips its ticks."""

    name = models.CharField(max_length=100)
    instance = models.PositiveIntegerField(default=0)
    paused_at = models.DateTimeField()
    paused_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "instance"], name="daemons_pause_unique_instance")]

    def __str__(self) -> str:
        return f"{self.name}[{self.instance}] paused"


class RunRequest(models.Model):
    """An operator's "run now" for one scheduled job, claimed (deleted) by the daemon that runs it."""

    daemon = models.CharField(max_length=100)
    job = models.CharField(max_length=100)
    requested_at = models.DateTimeField()
    requested_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["daemon", "job"], name="daemons_runrequest_unique_job")]

    def __str__(self) -> str:
        return f"run {self.daemon}.{self.job} now"


class TickMinute(models.Model):
    """Ticks, work and errors of one daemon instance in one minute: the dashboard's 24-hour history.

    `ticks_total` is the writing process's tick count since it started, so the newest row
    of a process is its tick counter for the metrics endpoint.
    """

    name = models.CharField(max_length=100)
    instance = models.PositiveIntegerField(default=0)
    host = models.CharField(max_length=255)
    minute = models.DateTimeField()
    pid = models.PositiveIntegerField()
    ticks = models.PositiveIntegerField(default=0)
    processed = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    busy_ms = models.PositiveBigIntegerField(default=0)
    ticks_total = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "instance", "host", "minute"], name="daemons_tickminute_unique")
        ]
        indexes = [models.Index(fields=["minute"], name="daemons_tickminute_minute")]

    def __str__(self) -> str:
        return f"{self.name}[{self.instance}]@{self.host} {self.minute:%Y-%m-%d %H:%M}"


class Dashboard(Heartbeat):
    """No data of its own: the admin index's entry for the daemons dashboard (see daemons.admin)."""

    class Meta:
        proxy = True
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"

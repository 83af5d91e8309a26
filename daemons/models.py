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

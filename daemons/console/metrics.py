"""The Prometheus view of every daemon instance in the cluster, read from the heartbeat rows.

Names and labels follow Prometheus's conventions: counters end in `_total` (with no `_created`
series, which would double the series count), times are Unix `_timestamp_seconds`, and the
instance number is `daemon_instance`, since Prometheus itself sets `instance` (the scraped
target) and would rename ours to `exported_instance`.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemons.cluster import history
from daemons.cluster.instances import cluster_instances
from daemons.process.exits import State

LABELS = ("daemon", "daemon_instance", "host")


class HeartbeatCollector(Collector):
    """Yields the `daemons_*` families at `now` (a database time): three queries (tick counters, heartbeats, pauses)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("daemons_up", "1 if the instance runs and its heartbeat is current, else 0.",
                               labels=LABELS)
        paused = GaugeMetricFamily("daemons_paused", "1 if an operator paused the instance.", labels=LABELS)
        ticks = CounterMetricFamily("daemons_ticks", "Ticks since the process started (up to a minute behind).",
                                    labels=LABELS)
        processed = CounterMetricFamily("daemons_processed", "Units of work done since the process started.",
                                        labels=LABELS)
        errors = CounterMetricFamily("daemons_errors", "Ticks that raised since the process started.", labels=LABELS)
        last_heartbeat = GaugeMetricFamily("daemons_last_heartbeat_timestamp_seconds",
                                           "When the instance last wrote its heartbeat, as Unix time.", labels=LABELS)
        duration = GaugeMetricFamily("daemons_last_tick_duration_seconds", "How long the last tick took.",
                                     labels=LABELS)
        tick_counts = history.tick_counters()
        for row in cluster_instances(now=self.now):
            labels = [row.name, str(row.instance), row.host]
            up.add_metric(labels, 1.0 if row.state == State.RUNNING else 0.0)
            paused.add_metric(labels, 1.0 if row.paused else 0.0)
            ticks.add_metric(labels, tick_counts.get((row.name, row.instance, row.host), 0))
            processed.add_metric(labels, row.processed)
            errors.add_metric(labels, row.errors)
            last_heartbeat.add_metric(labels, row.last_heartbeat.timestamp())
            if row.last_duration_ms is not None:
                duration.add_metric(labels, row.last_duration_ms / 1000)
        yield from (up, paused, ticks, processed, errors, last_heartbeat, duration)


def exposition(now: datetime) -> bytes:
    """The Prometheus text format of every heartbeat row at `now`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HeartbeatCollector(now))
    return generate_latest(registry)

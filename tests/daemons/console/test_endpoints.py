"""/daemons/health/ and /daemons/metrics/, scraped while real daemons run and after they stop."""
from __future__ import annotations

import json
import socket
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from daemons.cluster import control
from daemons.cluster.history import Recorder
from daemons.models import Heartbeat
from tests.conftest import wait_for

HOST = socket.gethostname()


def scrape(client: Client, **headers) -> dict[tuple[str, tuple], float]:
    """The metrics page as {(sample name, sorted labels): value}."""
    response = client.get("/daemons/metrics/", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def labels(name: str, instance: int = 0, host: str = HOST) -> tuple:
    return (("daemon", name), ("daemon_instance", str(instance)), ("host", host))


def health(client: Client) -> tuple[int, dict]:
    response = client.get("/daemons/health/")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, json.loads(response.content)


@pytest.mark.process
def test_health_and_metrics_follow_real_daemons(project, settings, client: Client) -> None:
    settings.DAEMONS_RUN_DIR = str(project.run_dir)
    settings.DAEMONS_HEALTH_EXPECTED = ["counter", "idle"]
    assert health(client) == (503, {"status": "failing", "daemons": {"counter": "stopped", "idle": "stopped"}})

    project.start("counter")
    project.start("idle")
    wait_for(lambda: Heartbeat.objects.filter(name="counter", processed__gte=2).exists(), timeout=30,
             message="the counter daemon to process twice")
    status, body = health(client)
    assert (status, body) == (200, {"status": "ok", "daemons": {"counter": "running", "idle": "running"}})

    samples = scrape(client)
    assert samples[("daemons_up", labels("counter"))] == 1.0
    assert samples[("daemons_up", labels("idle"))] == 1.0
    assert samples[("daemons_processed_total", labels("counter"))] >= 2
    assert samples[("daemons_processed_total", labels("idle"))] == 0
    assert samples[("daemons_errors_total", labels("counter"))] == 0
    assert samples[("daemons_ticks_total", labels("counter"))] >= 1
    assert samples[("daemons_last_tick_duration_seconds", labels("counter"))] >= 0
    beat = Heartbeat.objects.get(name="counter")
    last = samples[("daemons_last_heartbeat_timestamp_seconds", labels("counter"))]
    assert last >= beat.started_at.timestamp() and last <= beat.last_heartbeat.timestamp()

    result = project.manage("stopdaemon", "counter")
    assert result.returncode == 0, result.stderr
    assert health(client) == (503, {"status": "failing", "daemons": {"counter": "stopped", "idle": "running"}})
    samples = scrape(client)
    assert samples[("daemons_up", labels("counter"))] == 0.0
    assert samples[("daemons_up", labels("idle"))] == 1.0
    assert samples[("daemons_processed_total", labels("counter"))] >= 2  # the last count stays readable


@pytest.mark.django_db
def test_health_names_nothing_but_names_and_states(settings, client: Client, tmp_path) -> None:
    settings.DAEMONS_RUN_DIR = str(tmp_path)
    settings.DAEMONS_HEALTH_EXPECTED = ["counter", "no_such_daemon"]
    now = timezone.now()
    Heartbeat.objects.create(name="counter", host="elsewhere", pid=7, started_at=now, last_heartbeat=now,
                             last_error="secret detail", status_text="secret status")
    status, body = health(client)
    assert (status, body) == (503, {"status": "failing", "daemons": {"counter": "running",
                                                                      "no_such_daemon": "unknown"}})


@pytest.mark.django_db
def test_health_reads_other_hosts_and_pauses(settings, client: Client, tmp_path) -> None:
    settings.DAEMONS_RUN_DIR = str(tmp_path)
    settings.DAEMONS_HEALTH_EXPECTED = None  # every registered daemon
    from daemons import registry

    now = timezone.now()
    for name in registry.names():
        Heartbeat.objects.create(name=name, host="elsewhere", pid=7, started_at=now, last_heartbeat=now)
    assert health(client) == (200, {"status": "ok", "daemons": {n: "running" for n in registry.names()}})
    control.pause("counter")
    assert health(client)[1]["daemons"]["counter"] == "paused"
    assert health(client)[0] == 200  # a pause is the operator's choice, not a failure
    Heartbeat.objects.filter(name="idle").update(last_heartbeat=now - timedelta(hours=1))
    status, body = health(client)
    assert (status, body["daemons"]["idle"]) == (503, "dead")


@pytest.mark.django_db
def test_metrics_tick_counter_comes_from_the_process_history(client: Client) -> None:
    now = timezone.now()
    Heartbeat.objects.create(name="counter", host="web9", pid=4321, started_at=now - timedelta(seconds=30),
                             last_heartbeat=now, last_duration_ms=1500, processed=3)
    rec = Recorder("counter", host="web9", pid=4321)
    for _ in range(4):
        rec.record(now, duration_ms=1)
    rec.flush(now)
    control.pause("counter")
    samples = scrape(client)
    assert samples[("daemons_ticks_total", labels("counter", host="web9"))] == 4
    assert samples[("daemons_last_tick_duration_seconds", labels("counter", host="web9"))] == 1.5
    assert samples[("daemons_paused", labels("counter", host="web9"))] == 1.0


@pytest.mark.django_db
def test_metrics_follow_prometheus_conventions(client: Client) -> None:
    """No label Prometheus sets itself, no `_created` series, the heartbeat as a Unix timestamp."""
    now = timezone.now()
    beat = Heartbeat.objects.create(name="counter", instance=2, host="web9", pid=4321, processed=3, errors=1,
                                    started_at=now - timedelta(seconds=30), last_heartbeat=now - timedelta(seconds=4))
    response = client.get("/daemons/metrics/")
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    assert set(families) == {"daemons_up", "daemons_paused", "daemons_ticks", "daemons_processed", "daemons_errors",
                             "daemons_last_heartbeat_timestamp_seconds", "daemons_last_tick_duration_seconds"}
    assert {families[name].type for name in ("daemons_ticks", "daemons_processed", "daemons_errors")} == {"counter"}
    samples = [sample for family in families.values() for sample in family.samples]
    assert {sample.name for sample in families["daemons_processed"].samples} == {"daemons_processed_total"}
    assert not [sample.name for sample in samples if sample.name.endswith("_created")]
    # Prometheus's target labels: ours would be renamed to exported_instance / exported_job.
    assert all(sample.labels.keys() == {"daemon", "daemon_instance", "host"} for sample in samples)
    [stamp] = families["daemons_last_heartbeat_timestamp_seconds"].samples
    assert stamp.labels == {"daemon": "counter", "daemon_instance": "2", "host": "web9"}
    assert stamp.value == pytest.approx(beat.last_heartbeat.timestamp())


@pytest.mark.django_db
@pytest.mark.parametrize("meta", [{"REMOTE_ADDR": "10.1.2.3"}, {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR":
                                                                  "203.0.113.9"}, {"REMOTE_ADDR": "not-an-ip"}])
def test_metrics_refuse_clients_that_are_not_loopback(client: Client, meta: dict) -> None:
    response = client.get("/daemons/metrics/", **meta)
    assert response.status_code == 403
    assert b"loopback" in response.content and b"daemons_" not in response.content


@pytest.mark.django_db
def test_metrics_with_a_token_require_it_from_everyone(settings, client: Client) -> None:
    settings.DAEMONS_METRICS_TOKEN = "s3cret-token"
    Heartbeat.objects.create(name="counter", host="web1", pid=1, started_at=timezone.now(),
                             last_heartbeat=timezone.now())
    # Extra WSGI environ for Client.get.
    refused: list[dict[str, Any]] = [{}, {"HTTP_AUTHORIZATION": "Bearer wrong"},
                                     {"HTTP_AUTHORIZATION": "Basic s3cret-token"},
                                     {"HTTP_AUTHORIZATION": "Bearer s3cret-token-and-more"}]
    for headers in refused:
        response = client.get("/daemons/metrics/", **headers)
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    samples = scrape(client, REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert samples[("daemons_up", labels("counter", host="web1"))] == 1.0


@pytest.mark.django_db
def test_endpoints_answer_get_only(client: Client) -> None:
    assert client.post("/daemons/health/").status_code == 405
    assert client.post("/daemons/metrics/").status_code == 405


@pytest.mark.django_db
def test_metrics_without_the_database_answer_503(client: Client) -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE daemons_heartbeat RENAME TO daemons_heartbeat_gone")
    response = client.get("/daemons/metrics/")
    assert (response.status_code, response.content) == (503, b"database unavailable\n")

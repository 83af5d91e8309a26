"""The admin's heartbeats and job runs: read-only, filtered by state and host, pruned of dead rows."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from daemons.models import Heartbeat, JobRun

pytestmark = pytest.mark.django_db


def beats() -> dict[str, Heartbeat]:
    now = timezone.now()

    def make(name: str, host: str, *, age: timedelta = timedelta(0), stopped: bool = False) -> Heartbeat:
        return Heartbeat.objects.create(name=name, host=host, pid=100, started_at=now - age, last_heartbeat=now - age,
                                        stopped_at=now if stopped else None)

    return {
        "running": make("counter", "web1"),
        "silent": make("counter", "web2", age=timedelta(hours=2)),  # overdue: dead
        "stopped": make("idle", "web1", stopped=True),
    }


def listed(client: Client, query: str = "") -> str:
    response = client.get(f"/admin/daemons/heartbeat/{query}")
    assert response.status_code == 200
    return response.content.decode()


def test_heartbeats_filter_by_state_and_host(admin_client: Client) -> None:
    beats()
    html = listed(admin_client)
    assert html.count('<tr><td class="action-checkbox">') == 3
    assert ">dead<" in html
    running = listed(admin_client, "?state=running")
    assert running.count('<tr><td class="action-checkbox">') == 1 and "web1" in running
    assert listed(admin_client, "?state=dead").count('<tr><td class="action-checkbox">') == 1
    assert listed(admin_client, "?host=web1").count('<tr><td class="action-checkbox">') == 2
    assert listed(admin_client, "?state=stopped&host=web2").count('<tr><td class="action-checkbox">') == 0


def test_heartbeats_and_job_runs_are_read_only(admin_client: Client) -> None:
    beat = beats()["running"]
    assert admin_client.get("/admin/daemons/heartbeat/add/").status_code == 403
    page = admin_client.get(f"/admin/daemons/heartbeat/{beat.pk}/change/").content.decode()
    assert 'name="_save"' not in page and "deletelink" not in page
    assert admin_client.post(f"/admin/daemons/heartbeat/{beat.pk}/change/", {"pid": 1}).status_code == 403
    assert admin_client.post(f"/admin/daemons/heartbeat/{beat.pk}/delete/", {"post": "yes"}).status_code == 403
    Heartbeat.objects.get(pk=beat.pk, pid=100)
    run = JobRun.objects.create(daemon="digest", job="send_digest", last_outcome="error", errors=1)
    JobRun.objects.create(daemon="digest", job="other", last_outcome="ok")
    assert admin_client.get("/admin/daemons/jobrun/add/").status_code == 403
    html = admin_client.get("/admin/daemons/jobrun/?last_outcome=error").content.decode()
    assert "send_digest" in html and ">other<" not in html
    assert admin_client.post(f"/admin/daemons/jobrun/{run.pk}/change/", {"runs": 9}).status_code == 403


def test_prune_deletes_only_dead_rows_among_the_selected(admin_client: Client) -> None:
    rows = beats()
    response = admin_client.post("/admin/daemons/heartbeat/", {
        "action": "prune_dead", "_selected_action": [row.pk for row in rows.values()],
    }, follow=True)
    assert "Pruned 2 dead row(s); kept 1 running." in response.content.decode()
    assert list(Heartbeat.objects.values_list("host", flat=True)) == ["web1"]
    assert Heartbeat.objects.get().stopped_at is None


def test_prune_needs_the_delete_permission(client: Client, django_user_model) -> None:
    from django.contrib.auth.models import Permission

    rows = beats()
    staff = django_user_model.objects.create_user("viewer", password="pw-viewer-12345", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_heartbeat"))
    client.force_login(staff)
    assert "prune_dead" not in listed(client)
    client.post("/admin/daemons/heartbeat/", {"action": "prune_dead", "_selected_action": [rows["stopped"].pk]})
    assert Heartbeat.objects.count() == 3


def test_admin_index_links_the_dashboard_and_the_proxy_exposes_no_rows(admin_client: Client) -> None:
    beat = beats()["running"]
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/daemons/dashboard/"' in index
    assert admin_client.get(f"/admin/daemons/dashboard/{beat.pk}/change/").status_code == 404
    assert admin_client.get("/admin/daemons/dashboard/add/").status_code == 404

"""The staff dashboard: health, 24-hour charts, last errors, jobs, pause/resume and run now."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from daemons.models import Heartbeat, JobRun, Pause, RunRequest, TickMinute
from tests.conftest import matched

pytestmark = pytest.mark.django_db
URL = "/admin/daemons/dashboard/"


def page(client: Client) -> str:
    response = client.get(URL)
    assert response.status_code == 200
    return response.content.decode()


def test_shows_health_charts_errors_and_jobs(admin_client: Client, settings) -> None:
    settings.DAEMONS_DASHBOARD_REFRESH = 7
    now = timezone.now()
    Heartbeat.objects.create(name="counter", host="web1", pid=4242, started_at=now, last_heartbeat=now,
                             last_tick_at=now, last_outcome="error", last_duration_ms=12, processed=9, errors=2,
                             last_error="<script>alert('x')</script>", status_text="counting")
    Heartbeat.objects.create(name="idle", host="web2", pid=7, started_at=now, last_heartbeat=now - timedelta(hours=1))
    for minutes_ago, ticks in ((0, 5), (90, 8)):
        TickMinute.objects.create(name="counter", host="web1", pid=4242, ticks=ticks, processed=ticks * 2,
                                  minute=(now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0))
    JobRun.objects.create(daemon="digest", job="daily_digest", last_run_at=now, last_outcome="error", runs=3, errors=1,
                          last_error="SMTPServerDisconnected: gone", last_error_at=now, next_run_at=now)
    html = page(admin_client)
    assert '<meta http-equiv="refresh" content="7">' in html
    assert re.search(r'id="daemon-counter-0-web1">.*?<td>4242</td>.*?class="state-running">running', html, re.S)
    assert re.search(r'id="daemon-idle-0-web2">.*?class="state-dead">dead', html, re.S)
    assert 'id="daemon-failing-never"' in html  # registered, never reported
    chart = matched(r'<svg class="dash-chart" id="chart-counter-ticks".*?</svg>', html, re.S)
    assert len(re.findall(r"<rect class=\"ticks\"", chart)) == 24
    assert "counter: 13 ticks, 26 units processed, 0 errors" in " ".join(html.split())
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "SMTPServerDisconnected: gone" in html
    row = matched(r'<tr id="job-digest-daily_digest">.*?</tr>', html, re.S)
    assert "error" in row and "Run now" in row


def test_staff_only_and_controls_need_the_change_permission(client: Client, django_user_model) -> None:
    assert client.get(URL)["Location"].startswith("/admin/login/")
    django_user_model.objects.create_user("visitor", password="pw-visitor-12345")
    client.login(username="visitor", password="pw-visitor-12345")
    assert client.get(URL)["Location"].startswith("/admin/login/")
    django_user_model.objects.create_user("watcher", password="pw-watcher-12345", is_staff=True)
    client.login(username="watcher", password="pw-watcher-12345")
    html = page(client)
    assert "Run now" not in html and 'action="/admin/daemons/dashboard/pause/"' not in html
    assert 'href="/admin/daemons/dashboard/"' in client.get("/admin/").content.decode()
    assert client.post(f"{URL}pause/", {"name": "counter", "instance": 0}).status_code == 403
    assert client.post(f"{URL}run/", {"daemon": "digest", "job": "daily_digest"}).status_code == 403
    assert not Pause.objects.exists() and not RunRequest.objects.exists()


def test_pause_and_resume(admin_client: Client) -> None:
    now = timezone.now()
    Heartbeat.objects.create(name="counter", instance=2, host="web1", pid=1, started_at=now, last_heartbeat=now)
    response = admin_client.post(f"{URL}pause/", {"name": "counter", "instance": "2"}, follow=True)
    assert response.redirect_chain == [(URL, 302)]
    assert "Paused counter[2]: it stops ticking within one interval." in response.content.decode()
    assert Pause.objects.get().paused_by == "admin"
    html = page(admin_client)
    row = matched(r'<tr id="daemon-counter-2-web1">.*?</tr>', html, re.S)
    assert '<span class="paused">paused</span>' in row and ">Resume</button>" in row
    response = admin_client.post(f"{URL}resume/", {"name": "counter", "instance": "2"}, follow=True)
    assert "Resumed counter[2]." in response.content.decode() and not Pause.objects.exists()


def test_run_now_records_a_request(admin_client: Client) -> None:
    response = admin_client.post(f"{URL}run/", {"daemon": "digest", "job": "daily_digest"}, follow=True)
    assert "Requested: digest.daily_digest runs at the daemon&#x27;s next tick." in response.content.decode()
    assert list(RunRequest.objects.values_list("daemon", "job", "requested_by")) == [("digest", "daily_digest",
                                                                                       "admin")]
    row = matched(r'<tr id="job-digest-daily_digest">.*?</tr>', page(admin_client), re.S)
    assert "requested" in row and "Run now" not in row
    again = admin_client.post(f"{URL}run/", {"daemon": "digest", "job": "daily_digest"}, follow=True)
    assert "Already waiting to run: digest.daily_digest." in again.content.decode()


@pytest.mark.parametrize("path, data, message", [
    ("pause/", {"name": "counter", "instance": "abc"}, "instance: Enter a whole number."),
    ("pause/", {"name": "counter", "instance": "-1"}, "instance: Ensure this value is greater than or equal to 0."),
    ("pause/", {"name": "nosuch", "instance": "0"}, "name: no daemon is called &#x27;nosuch&#x27;"),
    ("resume/", {}, "name: This field is required."),
    ("pause/", {"name": "x" * 5000, "instance": "0"}, "name: Ensure this value has at most 100 characters"),
    ("run/", {"daemon": "digest", "job": "nosuch"}, "digest has no scheduled job &#x27;nosuch&#x27;"),
    ("run/", {"daemon": "counter", "job": "daily_digest"}, "counter has no scheduled job"),
    ("run/", {"daemon": "digest"}, "job: This field is required."),
])
def test_bad_input_is_a_message_not_an_error(admin_client: Client, path: str, data: dict, message: str) -> None:
    response = admin_client.post(URL + path, data, follow=True)
    assert response.status_code == 200
    assert f"Nothing done: {message}" in response.content.decode()
    assert not Pause.objects.exists() and not RunRequest.objects.exists()


def test_get_on_a_control_only_shows_the_dashboard(admin_client: Client) -> None:
    response = admin_client.get(f"{URL}pause/?name=counter&instance=0")
    assert (response.status_code, response["Location"]) == (302, URL)
    assert not Pause.objects.exists()


def test_controls_need_the_csrf_token(django_user_model) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-12345"))
    assert client.post(f"{URL}pause/", {"name": "counter", "instance": "0"}).status_code == 403
    token = matched(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(URL).content.decode(), group=1)
    assert client.post(f"{URL}pause/", {"name": "counter", "instance": "0", "csrfmiddlewaretoken": token}
                       ).status_code == 302
    assert Pause.objects.filter(name="counter").exists()

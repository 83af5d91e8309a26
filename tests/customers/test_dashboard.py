"""The staff dashboard: hourly activity, the SVG chart, the backlog and the daemons' heartbeats."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from django.test import Client

from customers.chart import activity_chart, nice_ceiling
from customers.models import Customer
from customers.reports import HourActivity, activity_per_hour, daemons_health, onboarding_backlog
from daemons.models import Heartbeat

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=timezone.utc)


def customer_at(created: datetime, onboarded: datetime | None = None, **fields) -> Customer:
    customer = Customer.objects.create(name="C", email=f"c{Customer.objects.count()}@example.com", **fields)
    Customer.objects.filter(pk=customer.pk).update(created_at=created, onboarded_at=onboarded)
    return customer


def beat(name: str = "onboarding", *, age: timedelta, stopped: bool = False, **fields) -> Heartbeat:
    return Heartbeat.objects.create(
        name=name, instance=0, host=fields.pop("host", "web1"), pid=fields.pop("pid", 4242), started_at=NOW - age,
        last_heartbeat=NOW - age, stopped_at=NOW - age if stopped else None, **fields,
    )


@pytest.mark.django_db
def test_activity_per_hour_buckets_the_last_24_hours() -> None:
    customer_at(NOW - timedelta(minutes=5), onboarded=NOW - timedelta(minutes=4))  # 12:25, this hour
    customer_at(NOW - timedelta(minutes=35))  # 11:55
    customer_at(NOW - timedelta(hours=23, minutes=30))  # 13:00 yesterday, the first bucket
    customer_at(NOW - timedelta(hours=24, minutes=31))  # too old
    customer_at(NOW - timedelta(hours=30), onboarded=NOW - timedelta(hours=2, minutes=10))  # onboarded at 10:20
    hours = activity_per_hour(now=NOW)
    assert len(hours) == 24
    assert hours[0].start == datetime(2026, 11, 26, 13, 0, tzinfo=timezone.utc)
    assert hours[-1].start == datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    by_hour = {h.start.hour: (h.signups, h.onboardings) for h in hours}
    assert by_hour[12] == (1, 1) and by_hour[11] == (1, 0) and by_hour[13] == (1, 0) and by_hour[10] == (0, 1)
    assert sum(h.signups for h in hours) == 3 and sum(h.onboardings for h in hours) == 2


@pytest.mark.django_db
def test_backlog_counts_each_state() -> None:
    customer_at(NOW)
    customer_at(NOW, attempts=2)
    customer_at(NOW, attempts=5, failed_at=NOW)
    customer_at(NOW, onboarded=NOW)
    backlog = onboarding_backlog()
    assert (backlog.waiting, backlog.retrying, backlog.failed) == (1, 1, 1)


@pytest.mark.django_db
def test_daemon_health_from_heartbeats() -> None:
    beat("onboarding", age=timedelta(seconds=3), processed=7, errors=1, status_text="2 waiting, 0 failed")
    beat("onboarding", age=timedelta(minutes=10), host="web2")
    beat("cleanup", age=timedelta(minutes=1), stopped=True)
    rows = {(r.name, r.host): r for r in daemons_health(now=NOW)}
    assert rows[("onboarding", "web1")].state == "running"
    assert rows[("onboarding", "web1")].processed == 7 and rows[("onboarding", "web1")].errors == 1
    assert rows[("onboarding", "web2")].state == "not responding"
    assert rows[("cleanup", "web1")].state == "stopped"


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 49, 51, 999)] == [1, 1, 2, 5, 10, 10, 20, 50, 100, 1000]


def test_chart_scales_bars_to_the_busiest_hour() -> None:
    start = datetime(2026, 11, 27, 0, tzinfo=timezone.utc)
    chart = activity_chart([HourActivity(start + timedelta(hours=i), i % 3, 1 if i == 5 else 0) for i in range(24)])
    signups = [b for b in chart.bars if b.series == "signups"]
    assert len(signups) == 24 and len(chart.bars) == 48
    tallest = max(signups, key=lambda b: b.height)
    assert tallest.y == chart.top and tallest.height == chart.baseline - chart.top  # 2 of a scale of 2
    assert signups[0].height == 0 and signups[0].label == "00:00 UTC: 0 signups"
    assert [b for b in chart.bars if b.series == "onboardings"][5].label == "05:00 UTC: 1 onboarding"
    assert [t.label for t in chart.x_ticks] == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]
    assert (chart.total_signups, chart.total_onboardings) == (24, 1)


@pytest.mark.django_db
def test_dashboard_renders_chart_and_daemons_for_staff(admin_client: Client) -> None:
    from django.utils import timezone as django_tz

    now = django_tz.now()
    Customer.objects.create(name="Ada", email="ada@example.com")
    Heartbeat.objects.create(
        name="onboarding", instance=0, host="web1", pid=99, started_at=now, last_heartbeat=now, processed=3,
        errors=2, last_error="<script>alert('hb')</script>", status_text="1 waiting, 0 failed",
    )
    response = admin_client.get("/admin/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    svg = re.search(r'<svg class="dash-chart" id="activity-chart" role="img".*?</svg>', html, re.S).group(0)
    assert len(re.findall(r'<rect class="(signups|onboardings)"', svg)) == 48
    assert "1 signup and 0 onboardings in the last 24 hours" in html
    assert "<script" not in html.replace('<script src="/static/admin/js/', "")  # the admin's own scripts only
    assert "&lt;script&gt;alert(&#x27;hb&#x27;)&lt;/script&gt;" in html
    assert re.search(r"<td>onboarding</td>\s*<td>web1</td>\s*<td>99</td>\s*<td><span class=\"state-running\">running", html)
    assert "1 waiting, 0 failed" in html
    assert '<span class="value" id="backlog-waiting">1</span>' in html


@pytest.mark.django_db
def test_dashboard_is_staff_only(client: Client, django_user_model) -> None:
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    django_user_model.objects.create_user("visitor", password="pw-not-staff-123")
    client.login(username="visitor", password="pw-not-staff-123")
    assert client.get("/admin/dashboard/")["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_dashboard_without_heartbeats_says_how_to_start_a_daemon(admin_client: Client) -> None:
    html = admin_client.get("/admin/dashboard/").content.decode()
    assert 'id="daemons-none"' in html and "rundaemon onboarding" in html

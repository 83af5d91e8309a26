"""The staff signup dashboard: hourly activity, the SVG chart, the backlog and the link to the daemons dashboard."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from customers.chart import activity_chart
from customers.models import Customer
from customers.reports import HourActivity, activity_per_hour, onboarding_backlog
from tests.conftest import matched

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


def customer_at(created: datetime, onboarded: datetime | None = None, **fields) -> Customer:
    customer = Customer.objects.create(name="C", email=f"c{Customer.objects.count()}@example.com", **fields)
    Customer.objects.filter(pk=customer.pk).update(created_at=created, onboarded_at=onboarded)
    return customer


@pytest.mark.django_db
def test_activity_per_hour_buckets_the_last_24_hours() -> None:
    customer_at(NOW - timedelta(minutes=5), onboarded=NOW - timedelta(minutes=4))  # 12:25, this hour
    customer_at(NOW - timedelta(minutes=35))  # 11:55
    customer_at(NOW - timedelta(hours=23, minutes=30))  # 13:00 yesterday, the first bucket
    customer_at(NOW - timedelta(hours=24, minutes=31))  # too old
    customer_at(NOW - timedelta(hours=30), onboarded=NOW - timedelta(hours=2, minutes=10))  # onboarded at 10:20
    hours = activity_per_hour(now=NOW)
    assert len(hours) == 24
    assert hours[0].start == datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    assert hours[-1].start == datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
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


def test_chart_scales_bars_to_the_busiest_hour() -> None:
    start = datetime(2026, 11, 27, 0, tzinfo=UTC)
    chart = activity_chart([HourActivity(start + timedelta(hours=i), i % 3, 1 if i == 5 else 0) for i in range(24)])
    signups = [b for b in chart.bars if b.series == "signups"]
    assert len(signups) == 24 and len(chart.bars) == 48
    tallest = max(signups, key=lambda b: b.height)
    assert tallest.y == chart.top and tallest.height == chart.baseline - chart.top  # 2 of a scale of 2
    assert signups[0].height == 0 and signups[0].label == "00:00 UTC: 0 signups"
    assert [b for b in chart.bars if b.series == "onboardings"][5].label == "05:00 UTC: 1 onboarding"
    assert [t.label for t in chart.x_ticks] == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]


@pytest.mark.django_db
def test_dashboard_renders_chart_and_backlog_and_links_the_daemons_dashboard(admin_client: Client) -> None:
    Customer.objects.create(name="<script>alert('ada')</script>", email="ada@example.com")
    response = admin_client.get("/admin/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    svg = matched(r'<svg class="dash-chart" id="activity-chart" role="img".*?</svg>', html, re.S)
    assert len(re.findall(r'<rect class="(signups|onboardings)"', svg)) == 48
    assert "<desc>1 signup and 0 onboardings in the last 24 hours;" in svg
    assert "1 signup and 0 onboardings in the last 24 hours" in html
    assert "<script" not in html.replace('<script src="/static/admin/js/', "")  # the admin's own scripts only
    assert '<span class="value" id="backlog-waiting">1</span>' in html
    assert re.search(r'<a id="daemons-dashboard" href="/admin/daemons/dashboard/">', html)
    assert 'id="daemons"' not in html  # the daemons' table lives on the framework's page only


@pytest.mark.django_db
def test_dashboard_is_staff_only(client: Client, django_user_model) -> None:
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    django_user_model.objects.create_user("visitor", password="pw-not-staff-123")
    client.login(username="visitor", password="pw-not-staff-123")
    assert client.get("/admin/dashboard/")["Location"].startswith("/admin/login/")

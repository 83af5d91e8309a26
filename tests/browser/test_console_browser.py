"""The daemons dashboard in a real Chromium: health and charts, pause/resume, run now, self-refresh."""
from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from daemons.models import Heartbeat, JobRun, Pause, RunRequest, TickMinute
from tests.browser.test_signup_browser import admin_login
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HOST = socket.gethostname()


def history(name: str, *, per_ten_minutes: int, busy_hours: dict[int, int]) -> None:
    """A day of ticks, one row per ten minutes; `busy_hours` maps hours ago to units processed per row."""
    now = timezone.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    TickMinute.objects.bulk_create(
        TickMinute(name=name, host=HOST, pid=4242, minute=this_hour - timedelta(hours=hours_ago, minutes=-10 * step),
                   ticks=per_ten_minutes, processed=busy_hours.get(hours_ago, 0), busy_ms=per_ten_minutes * 3)
        for hours_ago in range(24) for step in range(6)
        if this_hour - timedelta(hours=hours_ago, minutes=-10 * step) <= now
    )


def test_dashboard_shows_health_charts_errors_and_jobs(page, django_user_model, screenshot, settings) -> None:
    settings.DAEMONS_HEALTH_EXPECTED = ["onboarding", "digest", "cleanup"]
    now = timezone.now()
    Heartbeat.objects.create(
        name="onboarding", host=HOST, pid=4242, started_at=now - timedelta(days=1), last_heartbeat=now,
        last_tick_at=now, last_outcome="ok", last_duration_ms=38, processed=1310, errors=1,
        last_error="SMTPServerDisconnected: Connection unexpectedly closed", status_text="2 waiting, 0 failed",
    )
    Heartbeat.objects.create(name="digest", host=HOST, pid=4243, started_at=now - timedelta(days=1),
                             last_heartbeat=now, last_tick_at=now, last_outcome="idle", last_duration_ms=2,
                             processed=1, status_text="daily_digest: 1 runs, 0 errors")
    JobRun.objects.create(daemon="digest", job="daily_digest", last_run_at=now - timedelta(hours=4),
                          last_finished_at=now - timedelta(hours=4), last_outcome="ok", last_duration_ms=412,
                          next_run_at=now + timedelta(hours=20), runs=1)
    history("onboarding", per_ten_minutes=120, busy_hours={1: 6, 2: 14, 3: 9, 7: 20, 8: 11, 13: 4, 20: 8})
    history("digest", per_ten_minutes=60, busy_hours={4: 1})
    page.set_viewport_size({"width": 1280, "height": 900})
    admin_login(page, django_user_model)
    page.get_by_role("link", name="Dashboard").first.click()  # from the admin index
    page.wait_for_url("**/admin/daemons/dashboard/")
    onboarding = page.locator(f"#daemon-onboarding-0-{HOST.lower()}")
    assert "running" in onboarding.locator("td").nth(3).inner_text()
    assert page.locator("#daemon-cleanup-never").is_visible()  # expected but never started
    assert page.locator("#daemon-failing-never").count() == 0  # registered but not expected
    chart = page.locator("svg#chart-onboarding-processed")
    box = chart.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    assert chart.locator("rect.processed").count() == 24
    tall = chart.evaluate("svg => [...svg.querySelectorAll('rect')].filter(r => r.getBBox().height > 0).length")
    assert tall == 7  # the seven busy hours
    expected_ticks = TickMinute.objects.filter(name="digest").count() * 60
    heading = page.locator("#activity-title ~ h3").first.inner_text()
    assert f"digest: {expected_ticks} ticks, 6 units processed" in heading
    assert "SMTPServerDisconnected" in page.locator("#errors").inner_text()
    assert page.get_by_role("button", name="Run digest.daily_digest now").is_visible()
    screenshot(page, "daemons-dashboard.png")


def test_pause_and_resume_a_running_daemon(page, django_user_model, project, settings) -> None:
    settings.DAEMONS_RUN_DIR = str(project.run_dir)
    project.start("counter")
    wait_for(lambda: Heartbeat.objects.filter(name="counter").exists(), timeout=30, message="a heartbeat")
    admin_login(page, django_user_model)
    page.goto("/admin/daemons/dashboard/")
    row = page.locator(f"#daemon-counter-0-{HOST.lower()}")
    assert "running" in row.inner_text() and "paused" not in row.inner_text()
    row.get_by_role("button", name="Pause counter instance 0").click()
    page.get_by_text("Paused counter[0]: it stops ticking within one interval.").wait_for()
    assert Pause.objects.filter(name="counter", instance=0, paused_by="operator").exists()
    row = page.locator(f"#daemon-counter-0-{HOST.lower()}")
    assert row.locator(".paused").inner_text() == "paused"
    row.get_by_role("button", name="Resume counter instance 0").click()
    page.get_by_text("Resumed counter[0].").wait_for()
    assert not Pause.objects.exists()
    assert page.locator(f"#daemon-counter-0-{HOST.lower()} .paused").count() == 0


def test_run_now_records_the_request_and_wakes_the_daemon(page, django_user_model) -> None:
    admin_login(page, django_user_model)
    page.goto("/admin/daemons/dashboard/")
    page.get_by_role("button", name="Run digest.daily_digest now").click()
    page.get_by_text("Requested: digest.daily_digest runs at the daemon's next tick.").wait_for()
    assert list(RunRequest.objects.values_list("daemon", "job", "requested_by")) == [
        ("digest", "daily_digest", "operator")]
    assert page.locator("#job-digest-daily_digest .run-requested").inner_text() == "requested"
    assert page.get_by_role("button", name="Run digest.daily_digest now").count() == 0


def test_dashboard_refreshes_itself(page, django_user_model, settings) -> None:
    settings.DAEMONS_DASHBOARD_REFRESH = 1
    now = timezone.now()
    beat = Heartbeat.objects.create(name="counter", host=HOST, pid=1, started_at=now, last_heartbeat=now,
                                    status_text="before")
    admin_login(page, django_user_model)
    page.goto("/admin/daemons/dashboard/")
    page.get_by_text("before", exact=True).wait_for()
    Heartbeat.objects.filter(pk=beat.pk).update(status_text="after", last_heartbeat=timezone.now())
    page.get_by_text("after", exact=True).wait_for(timeout=15_000)  # with no click or reload by the test

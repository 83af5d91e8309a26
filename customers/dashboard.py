"""The staff-only dashboard: activity per hour as an SVG chart, the backlog and the daemons' health."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .chart import activity_chart
from .reports import activity_per_hour, daemons_health, onboarding_backlog


@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Render the dashboard; wrap it in `admin.site.admin_view` so only staff see it."""
    now = timezone.now()
    activity = activity_per_hour(now=now, hours=24)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "now": now,
        "activity": activity,
        "chart": activity_chart(activity),
        "backlog": onboarding_backlog(),
        "daemons": daemons_health(now=now),
    }
    return render(request, "customers/dashboard.html", context)

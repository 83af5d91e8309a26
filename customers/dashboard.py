"""The staff-only signup dashboard: activity per hour as an SVG chart and the onboarding backlog.

The daemons' health, history and controls are the framework's dashboard, which this page links to.
"""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.views.decorators.http import require_GET

from .chart import activity_chart
from .reports import activity_per_hour, onboarding_backlog


@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Render the dashboard; wrap it in `admin.site.admin_view` so only staff see it."""
    now = timezone.now()
    activity = activity_per_hour(now=now, hours=24)
    signups, onboardings = sum(h.signups for h in activity), sum(h.onboardings for h in activity)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "now": now,
        "activity": activity,
        "chart": activity_chart(activity),
        "total_signups": signups,
        "total_onboardings": onboardings,
        "chart_desc": f"{signups} signup{pluralize(signups)} and {onboardings} onboarding{pluralize(onboardings)} "
                      "in the last 24 hours; the table below has each hour's numbers.",
        "backlog": onboarding_backlog(),
    }
    return render(request, "customers/dashboard.html", context)

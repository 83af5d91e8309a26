"""The dashboard's chart: signups and onboardings per hour, drawn with the framework's bar chart."""
from __future__ import annotations

from daemons.console.web.chart import Chart, Series, bar_chart

from .reports import HourActivity


def activity_chart(activity: list[HourActivity]) -> Chart:
    """Two bars per hour (signups, onboardings) scaled to the busiest hour, with labelled axes."""
    return bar_chart(
        [hour.start.strftime("%H:00") for hour in activity],
        [
            Series("signups", [hour.signups for hour in activity], "signup", "signups"),
            Series("onboardings", [hour.onboardings for hour in activity], "onboarding", "onboardings"),
        ],
    )

"""Geometry of the dashboard's bar chart, drawn as inline SVG by its template (no JavaScript)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .reports import HourActivity

WIDTH = 760
HEIGHT = 260
LEFT = 44  # room for the y-axis labels
RIGHT = 8
TOP = 12
BOTTOM = 34  # room for the hour labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # "signups" or "onboardings": the CSS class and the legend
    label: str  # the tooltip, e.g. "14:00 UTC: 3 signups"


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right_edge: int
    baseline: float
    top: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total_signups: int
    total_onboardings: int


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `value` (and at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def activity_chart(activity: list[HourActivity]) -> Chart:
    """Two bars per hour (signups, onboardings) scaled to the busiest hour, with labelled axes."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    top_value = nice_ceiling(max([0] + [max(h.signups, h.onboardings) for h in activity]))
    slot = plot_width / max(1, len(activity))
    bar_width = slot * 0.38
    bars: list[Bar] = []
    x_ticks: list[Tick] = []
    for index, hour in enumerate(activity):
        slot_left = LEFT + index * slot
        when = hour.start.strftime("%H:00")
        for offset, series, value in ((0.1, "signups", hour.signups), (0.52, "onboardings", hour.onboardings)):
            height = plot_height * value / top_value
            noun = series if value != 1 else series[:-1]
            bars.append(
                Bar(
                    x=round(slot_left + slot * offset, 2),
                    y=round(baseline - height, 2),
                    width=round(bar_width, 2),
                    height=round(height, 2),
                    series=series,
                    label=f"{when} UTC: {value} {noun}",
                )
            )
        if index % 3 == 0:
            x_ticks.append(Tick(position=round(slot_left + slot / 2, 2), label=when))
    y_ticks = [
        Tick(position=round(baseline - plot_height * fraction, 2), label=str(round(top_value * fraction)))
        for fraction in (0, 0.5, 1)
        if fraction == 0 or top_value * fraction == int(top_value * fraction)
    ]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right_edge=WIDTH - RIGHT,
        baseline=baseline,
        top=TOP,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        total_signups=sum(h.signups for h in activity),
        total_onboardings=sum(h.onboardings for h in activity),
    )

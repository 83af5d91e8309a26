"""Geometry of a bar chart with labelled axes, drawn as inline SVG by a template (no JavaScript)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEFT = 44  # room for the y-axis labels
RIGHT = 8
TOP = 12
BOTTOM = 34  # room for the x-axis labels


@dataclass(frozen=True)
class Series:
    """One kind of bar: its CSS class, its values (one per slot) and its noun, e.g. ("tick", "ticks")."""

    name: str
    values: Sequence[int]
    singular: str
    plural: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # the CSS class
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


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `value` (and at least 1)."""
    if value <= 1:
        return 1
    magnitude: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def bar_chart(slots: Sequence[str], series: Sequence[Series], *, width: int = 760, height: int = 260,
              label_every: int = 3, suffix: str = " UTC") -> Chart:
    """Side-by-side bars per slot (one per series) on one scale set by the largest value.

    `slots` label the x axis (every `label_every`-th is written); each bar's tooltip reads
    "<slot><suffix>: <value> <noun>". The scale's top is `nice_ceiling` of the largest value.
    """
    plot_width = width - LEFT - RIGHT
    plot_height = height - TOP - BOTTOM
    baseline = TOP + plot_height
    top_value = nice_ceiling(max([0] + [v for s in series for v in s.values]))
    slot = plot_width / max(1, len(slots))
    gap = 0.1  # of a slot, before the first bar and after the last
    bar_width = slot * (1 - 2 * gap) / max(1, len(series)) * 0.95
    bars: list[Bar] = []
    x_ticks: list[Tick] = []
    for index, when in enumerate(slots):
        slot_left = LEFT + index * slot
        for number, kind in enumerate(series):
            value = kind.values[index]
            bar_height = plot_height * value / top_value
            offset = gap + number * (1 - 2 * gap) / len(series)
            bars.append(Bar(
                x=round(slot_left + slot * offset, 2), y=round(baseline - bar_height, 2), width=round(bar_width, 2),
                height=round(bar_height, 2), series=kind.name,
                label=f"{when}{suffix}: {value} {kind.singular if value == 1 else kind.plural}",
            ))
        if index % label_every == 0:
            x_ticks.append(Tick(position=round(slot_left + slot / 2, 2), label=when))
    y_ticks = [
        Tick(position=round(baseline - plot_height * fraction, 2), label=str(round(top_value * fraction)))
        for fraction in (0, 0.5, 1)
        if fraction == 0 or top_value * fraction == int(top_value * fraction)
    ]
    return Chart(width=width, height=height, left=LEFT, right_edge=width - RIGHT, baseline=baseline, top=TOP,
                 bars=bars, y_ticks=y_ticks, x_ticks=x_ticks)

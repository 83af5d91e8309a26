"""The bar chart's geometry: scale, bars side by side, axis labels and tooltips."""
from __future__ import annotations

from daemons.console.web.chart import Series, bar_chart, nice_ceiling


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 49, 51, 999)] == [1, 1, 2, 5, 10, 10, 20, 50, 100, 1000]


def test_bars_share_one_scale_and_sit_side_by_side() -> None:
    slots = [f"{h:02d}:00" for h in range(6)]
    chart = bar_chart(slots, [Series("a", [0, 1, 2, 3, 4, 5], "tick", "ticks"), Series("b", [1] * 6, "unit", "units")],
                      width=400, height=200, label_every=2, suffix="")
    assert len(chart.bars) == 12
    tallest = max(chart.bars, key=lambda bar: bar.height)
    assert tallest.series == "a" and tallest.height == chart.baseline - chart.top  # 5 of a scale of 5
    first_a, first_b = chart.bars[0], chart.bars[1]
    assert first_a.x + first_a.width <= first_b.x  # no overlap within a slot
    assert (first_a.label, first_b.label, chart.bars[3].label) == ("00:00: 0 ticks", "00:00: 1 unit", "01:00: 1 unit")
    assert [t.label for t in chart.x_ticks] == ["00:00", "02:00", "04:00"]
    assert [t.label for t in chart.y_ticks] == ["0", "5"]  # 2.5 is not a whole number: no middle line
    assert chart.right_edge == 400 - 8


def test_an_empty_chart_has_a_scale_of_one() -> None:
    chart = bar_chart(["00:00"], [Series("a", [0], "tick", "ticks")])
    assert chart.bars[0].height == 0 and [t.label for t in chart.y_ticks] == ["0", "1"]

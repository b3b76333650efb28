"""The inline SVG charts: counts → rectangles (position, height, colour), as pure functions."""

from __future__ import annotations

import re

import pytest

from hsi.web.charts import (
    BarColumn,
    Frame,
    Segment,
    axis_max,
    axis_ticks,
    horizontal_bars_svg,
    stacked_bars_svg,
    stacked_segments,
)

ORDER = ("low", "high")
COLOURS = {"low": "#2e6b30", "high": "#b3400a"}
NAMES = {"low": "Low", "high": "High"}
# A plot area of exactly 100 × 100 from (20, 10): heights read as percentages of the axis.
FRAME = Frame(width=140, height=120, left=20, right=20, top=10, bottom=10)


def columns(*counts: dict[str, int]) -> list[BarColumn]:
    return [BarColumn(f"c{i}", f"column {i}", c) for i, c in enumerate(counts)]


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (5, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 200)],
)
def test_the_y_axis_ends_at_a_round_number(value: int, top: int) -> None:
    """The axis maximum is the smallest 1, 2 or 5 × 10ⁿ that holds the tallest bar."""
    assert axis_max(value) == top


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (1, [0, 1]),
        (2, [0, 1, 2]),
        (5, [0, 1, 2, 3, 4, 5]),
        (10, [0, 2, 4, 6, 8, 10]),
        (20, [0, 4, 8, 12, 16, 20]),
        (200, [0, 40, 80, 120, 160, 200]),
    ],
)
def test_gridlines_fall_on_whole_numbers(top: int, ticks: list[int]) -> None:
    """Gridlines split the axis in five (or two) whole steps."""
    assert axis_ticks(top) == ticks


@pytest.mark.parametrize(
    ("counts", "top", "segments"),
    [
        (
            [{"low": 1}],
            1,
            [Segment(0, "low", 1, 30.0, 10.0, 80.0, 100.0, "#2e6b30")],
        ),
        (
            [{"low": 1, "high": 1}, {"high": 2}],
            2,
            [
                Segment(0, "low", 1, 25.0, 60.0, 40.0, 50.0, "#2e6b30"),
                Segment(0, "high", 1, 25.0, 10.0, 40.0, 50.0, "#b3400a"),
                Segment(1, "high", 2, 75.0, 10.0, 40.0, 100.0, "#b3400a"),
            ],
        ),
        (
            [{"low": 3}, {}],
            5,
            [Segment(0, "low", 3, 25.0, 50.0, 40.0, 60.0, "#2e6b30")],
        ),
        ([{"low": 0, "other": 5}], 1, []),  # zero counts and unknown series draw nothing
        ([], 1, []),
    ],
)
def test_counts_become_stacked_rectangles(
    counts: list[dict[str, int]], top: int, segments: list[Segment]
) -> None:
    """Each non-zero count is a rectangle of its series' colour, stacked bottom-up in series
    order, its height its share of the axis maximum."""
    found, axis = stacked_segments(columns(*counts), ORDER, COLOURS, FRAME)
    assert axis == top
    assert found == segments


def test_the_svg_draws_each_segment_with_its_count_and_colour() -> None:
    """The SVG has one titled rectangle per segment, at the computed place and colour."""
    svg = stacked_bars_svg(
        columns({"low": 1, "high": 1}, {"high": 2}),
        chart_id="c",
        title="Events",
        description="Per hour",
        order=ORDER,
        colours=COLOURS,
        names=NAMES,
        frame=FRAME,
    )
    rects = re.findall(
        r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" '
        r'fill="([^"]+)" data-series="(\w+)" data-count="(\d+)">',
        svg,
    )
    assert rects == [
        ("25", "60", "40", "50", "#2e6b30", "low", "1"),
        ("25", "10", "40", "50", "#b3400a", "high", "1"),
        ("75", "10", "40", "100", "#b3400a", "high", "2"),
    ]
    assert "<title>column 1 · High: 2</title>" in svg
    assert 'role="img"' in svg
    assert 'aria-labelledby="c-title c-desc"' in svg
    assert svg.count(">Low</text>") == 1  # the legend


def test_the_svg_escapes_text_and_can_leave_the_legend_to_the_page() -> None:
    """Labels and titles are escaped; without a legend no legend swatches are drawn."""
    svg = stacked_bars_svg(
        [BarColumn("<b>", "a & b", {"low": 1})],
        chart_id="x",
        title="<script>",
        description="d",
        order=ORDER,
        colours=COLOURS,
        names=NAMES,
        legend=False,
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "&lt;b&gt;" in svg
    assert "a &amp; b · Low: 1" in svg
    assert ">Low</text>" not in svg


def test_horizontal_bars_scale_to_the_largest_value() -> None:
    """One bar per value, the largest filling the room to the right of the labels."""
    svg = horizontal_bars_svg(
        [("detect", 5.0, "5 s"), ("analyze", 10.0, "10 s"), ("idle", 0.0, "0 s")],
        chart_id="h",
        title="t",
        description="d",
        width=720,
        label_width=240,
    )
    widths = re.findall(r'<rect x="240" y="[\d.]+" width="([\d.]+)"', svg)
    assert widths == ["195", "390", "0"]
    assert "<title>analyze: 10 s</title>" in svg

"""Charts as inline SVG, rendered on the server: pure functions from counts to markup.

`stacked_segments()` is the whole layout decision (which rectangle, where, how tall, which
colour) and `stacked_bars_svg()` only writes it out; `horizontal_bars_svg()` draws one bar per
labelled value. No scripts, no styles: colours are attributes, every bar has a `<title>`
(a tooltip, read by screen readers), and each chart has a title and description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class BarColumn:
    label: str  # written under the bar; "" for none (dense charts label every n-th bar)
    title: str  # the full name of the bar, for tooltips
    counts: Mapping[str, int]  # per series (risk level)


@dataclass(frozen=True)
class Segment:
    column: int
    series: str
    count: int
    x: float
    y: float
    width: float
    height: float
    fill: str


@dataclass(frozen=True)
class Frame:
    """The drawing area: total size and the margins left for axis labels."""

    width: int = 720
    height: int = 240
    left: int = 40
    right: int = 10
    top: int = 10
    bottom: int = 40

    @property
    def plot_width(self) -> float:
        return float(self.width - self.left - self.right)

    @property
    def plot_height(self) -> float:
        return float(self.height - self.top - self.bottom)

    @property
    def baseline(self) -> float:
        return float(self.height - self.bottom)


BAR_FILL = 0.8  # the share of its slot a bar covers; the rest is the gap


def axis_max(value: int) -> int:
    """The top of the y axis: the smallest 1, 2 or 5 × 10ⁿ at or above `value` (at least 1)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10


def axis_ticks(top: int) -> list[int]:
    """Gridline values from 0 to `top` in five or two steps when those are whole numbers."""
    for parts in (5, 2):
        if top % parts == 0 and top >= parts:
            step = top // parts
            return list(range(0, top + 1, step))
    return [0, top]


def _r(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def stacked_segments(
    columns: Sequence[BarColumn],
    order: Sequence[str],
    colours: Mapping[str, str],
    frame: Frame | None = None,
) -> tuple[list[Segment], int]:
    """One rectangle per non-zero count, stacked bottom-up in `order`, scaled so the tallest
    column reaches `axis_max` of its total; returns the segments and that axis maximum."""
    frame = frame or Frame()
    totals = [sum(column.counts.get(series, 0) for series in order) for column in columns]
    top = axis_max(max(totals, default=0))
    if not columns:
        return [], top
    slot = frame.plot_width / len(columns)
    width = slot * BAR_FILL
    segments = []
    for index, column in enumerate(columns):
        x = frame.left + index * slot + (slot - width) / 2
        y = frame.baseline
        for series in order:
            count = column.counts.get(series, 0)
            if count <= 0:
                continue
            height = count / top * frame.plot_height
            y -= height
            segments.append(Segment(index, series, count, x, y, width, height, colours[series]))
    return segments, top


def stacked_bars_svg(
    columns: Sequence[BarColumn],
    *,
    chart_id: str,
    title: str,
    description: str,
    order: Sequence[str],
    colours: Mapping[str, str],
    names: Mapping[str, str],
    frame: Frame | None = None,
    legend: bool = True,
) -> str:
    """A stacked bar chart with a y axis, x labels and (unless the page has its own) a legend
    below the plot."""
    frame = frame or Frame()
    segments, top = stacked_segments(columns, order, colours, frame)
    legend_height = 24 if legend else 0
    total_height = frame.height + legend_height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
        f'viewBox="0 0 {frame.width} {total_height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>',
    ]
    for tick in axis_ticks(top):
        y = frame.baseline - tick / top * frame.plot_height
        out.append(
            f'<line x1="{frame.left}" x2="{frame.width - frame.right}" y1="{_r(y)}" '
            f'y2="{_r(y)}" stroke="#d0d4d9" stroke-width="1"/>'
            f'<text x="{frame.left - 6}" y="{_r(y + 4)}" text-anchor="end" font-size="11" '
            f'fill="#333">{tick}</text>'
        )
    slot = frame.plot_width / len(columns) if columns else 0.0
    for index, column in enumerate(columns):
        if column.label:
            x = frame.left + index * slot
            out.append(
                f'<text x="{_r(x)}" y="{frame.baseline + 16}" font-size="11" fill="#333">'
                f"{escape(column.label)}</text>"
            )
    for s in segments:
        tip = f"{columns[s.column].title} · {names.get(s.series, s.series)}: {s.count}"
        out.append(
            f'<rect x="{_r(s.x)}" y="{_r(s.y)}" width="{_r(s.width)}" height="{_r(s.height)}" '
            f'fill="{escape(s.fill)}" data-series="{escape(s.series)}" data-count="{s.count}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    x = float(frame.left)
    legend_y = frame.height + 8
    for series in order if legend else ():
        label = names.get(series, series)
        out.append(
            f'<rect x="{_r(x)}" y="{legend_y}" width="12" height="12" '
            f'fill="{escape(colours[series])}"/>'
            f'<text x="{_r(x + 16)}" y="{legend_y + 11}" font-size="12" fill="#222">'
            f"{escape(label)}</text>"
        )
        x += 28 + 7.5 * len(label)
    out.append("</svg>")
    return "".join(out)


def horizontal_bars_svg(
    items: Sequence[tuple[str, float, str]],
    *,
    chart_id: str,
    title: str,
    description: str,
    colour: str = "#1f5fa8",
    width: int = 720,
    label_width: int = 240,
    row_height: int = 22,
) -> str:
    """One bar per `(label, value, value text)`, scaled to the largest value."""
    height = max(1, len(items)) * row_height + 8
    top = axis_max(int(max((v for _, v, _ in items), default=0) + 0.999))
    room = width - label_width - 90
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>',
    ]
    for index, (label, value, text) in enumerate(items):
        y = 4 + index * row_height
        bar = max(0.0, value) / top * room
        out.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" font-size="12" '
            f'fill="#222">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{_r(bar)}" height="{row_height - 6}" '
            f'fill="{escape(colour)}"><title>{escape(label)}: {escape(text)}</title></rect>'
            f'<text x="{_r(label_width + bar + 6)}" y="{y + 15}" font-size="12" fill="#222">'
            f"{escape(text)}</text>"
        )
    out.append("</svg>")
    return "".join(out)

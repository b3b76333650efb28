"""Figures, their medians and ratios, and the table the runner prints.

A `Figure` holds one value per round for HSI and, when the figure has one, for its floor (the
same work without HSI's framework, measured in the same round). The ratio is HSI's speed as a
fraction of the floor's: `hsi / floor` for rates (higher is better) and `floor / hsi` for times
(lower is better), so 1.0× means "as fast as the floor" and 0.5× "half as fast" either way.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q` quantile (0–1) of `samples`, nearest rank."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


@dataclass(frozen=True)
class Target:
    """What a figure should reach: a ratio to its floor, and/or a bound on HSI's own value."""

    min_ratio: float | None = None
    max_value: float | None = None  # for times and sizes
    min_value: float | None = None  # for rates

    def describe(self, unit: str) -> str:
        parts = []
        if self.max_value is not None:
            parts.append(f"≤ {_number(self.max_value)} {unit}")
        if self.min_value is not None:
            parts.append(f"≥ {_number(self.min_value)} {unit}")
        if self.min_ratio is not None:
            parts.append(f"≥ {self.min_ratio:g}× floor")
        return ", ".join(parts) or "-"


@dataclass
class Figure:
    """One measured quantity: HSI's value per round and its floor's."""

    benchmark: str  # "B1"
    name: str  # "files/s, 20000 files over 8 cameras"
    unit: str  # "files/s", "ms", "MB"
    higher_is_better: bool
    hsi: list[float] = field(default_factory=list)
    floor: list[float] | None = None
    target: Target = field(default_factory=Target)
    note: str = ""

    @property
    def hsi_median(self) -> float:
        return median(self.hsi)

    @property
    def floor_median(self) -> float | None:
        return median(self.floor) if self.floor else None

    @property
    def ratio(self) -> float | None:
        """HSI's speed as a fraction of the floor's (see the module doc)."""
        floor = self.floor_median
        if floor is None or floor == 0 or self.hsi_median == 0:
            return None
        if self.higher_is_better:
            return self.hsi_median / floor
        return floor / self.hsi_median

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None: the figure has no target)."""
        target = self.target
        checks: list[bool] = []
        if target.min_ratio is not None:
            ratio = self.ratio
            checks.append(ratio is not None and ratio >= target.min_ratio)
        if target.max_value is not None:
            checks.append(self.hsi_median <= target.max_value)
        if target.min_value is not None:
            checks.append(self.hsi_median >= target.min_value)
        return all(checks) if checks else None


def rate(benchmark: str, name: str, unit: str, **details: Any) -> Figure:
    """A figure where more is better (files/s, requests/s); `details` as `figure`'s."""
    return figure(benchmark, name, unit, True, **details)


def cost(benchmark: str, name: str, unit: str, **details: Any) -> Figure:
    """A figure where less is better (times, sizes); `details` as `figure`'s."""
    return figure(benchmark, name, unit, False, **details)


def figure(
    benchmark: str,
    name: str,
    unit: str,
    higher_is_better: bool,
    *,
    floor: bool = True,
    target: Target = Target(),
    note: str = "",
) -> Figure:
    """An empty figure, measured beside its floor unless `floor=False`."""
    return Figure(
        benchmark,
        name,
        unit,
        higher_is_better,
        floor=[] if floor else None,
        target=target,
        note=note,
    )


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _runs(values: Sequence[float] | None) -> str:
    return " ".join(_number(v) for v in values) if values else "-"


def table(figures: Sequence[Figure]) -> str:
    """The results as a Markdown table (readable in a terminal, pasteable into the README)."""
    header = (
        "| id | figure | HSI | floor | ratio | target | met | HSI runs | floor runs |",
        "|---|---|---:|---:|---:|---|---|---|---|",
    )
    lines = list(header)
    for f in figures:
        floor = f.floor_median
        ratio = f.ratio
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        lines.append(
            f"| {f.benchmark} | {f.name} | {_number(f.hsi_median)} {f.unit} "
            f"| {'-' if floor is None else _number(floor) + ' ' + f.unit} "
            f"| {'-' if ratio is None else f'{ratio:.2f}×'} | {f.target.describe(f.unit)} "
            f"| {met} | {_runs(f.hsi)} | {_runs(f.floor)} |"
        )
    notes = [f"- {f.benchmark} {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def record(figures: Sequence[Figure], values: Sequence[float], *, floor: bool = False) -> None:
    """Append one round's values, one a figure, to HSI's runs or (`floor=True`) the floor's."""
    for each, value in zip(figures, values, strict=True):
        runs = each.floor if floor else each.hsi
        assert runs is not None, f"{each.name} has no floor"
        runs.append(value)

"""What a re-analysis run would change (pure): level transitions, the score shift, the events
that would cross the alert threshold, and the cost."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streams.reanalysis.selection import LEVELS
from streams.schemas import ReanalysisFailed, ReanalysisResult

NONE = "none"  # the current level of a batch that had no completed analysis


@dataclass(frozen=True)
class Compared:
    """One batch of the run: its current judgement and the candidate's."""

    camera: str
    batch_id: str
    current_level: str | None
    current_score: int | None
    level: str | None  # None: the candidate failed
    score: int | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.level is not None and (
            self.level != self.current_level or self.score != self.current_score
        )


def compared(entry: ReanalysisResult | ReanalysisFailed) -> Compared:
    if isinstance(entry, ReanalysisFailed):
        return Compared(entry.camera_id, entry.batch_id, None, None, None, None, error=entry.error)
    return Compared(
        entry.camera_id,
        entry.batch_id,
        entry.current_level,
        entry.current_score,
        entry.risk_level,
        entry.risk_score,
        entry.prompt_tokens or 0,
        entry.completion_tokens or 0,
        entry.latency_ms,
    )


@dataclass(frozen=True)
class Report:
    analyzed: int
    failed: int
    matrix: dict[tuple[str, str], int]  # (current level or "none", candidate level) → batches
    changed: int
    shift_median: float | None  # candidate score − current score, over batches with both
    shift_p90: float | None  # 90th percentile of the absolute shift
    raised: tuple[Compared, ...]  # would now reach the alert threshold
    lowered: tuple[Compared, ...]  # would no longer reach it
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # the candidate's time, summed over calls

    def render(self, *, limit: int = 10) -> str:
        """The report as text for a terminal."""
        rows = [NONE, *LEVELS]
        width = max(len(r) for r in rows) + 2
        lines = [
            f"batches: {self.analyzed + self.failed} ({self.analyzed} judged, "
            f"{self.failed} failed); {self.changed} would change",
            "",
            "current \\ candidate".ljust(width + 10) + "".join(lv.rjust(10) for lv in LEVELS),
        ]
        for current in rows:
            counts = [self.matrix.get((current, lv), 0) for lv in LEVELS]
            if current == NONE and not any(counts):
                continue
            lines.append(current.ljust(width + 10) + "".join(f"{n:>10}" for n in counts))
        shift = (
            f"median {self.shift_median:+.1f}, p90 of |shift| {self.shift_p90:.1f}"
            if self.shift_median is not None and self.shift_p90 is not None
            else "n/a (no batch had a current score)"
        )
        lines += ["", f"score shift: {shift}"]
        for title, items in (
            ("would now alert", self.raised),
            ("would no longer alert", self.lowered),
        ):
            lines.append(f"{title}: {len(items)}")
            for item in items[:limit]:
                lines.append(
                    f"  {item.camera} {item.batch_id}: {item.current_level or NONE} "
                    f"{item.current_score if item.current_score is not None else '-'} → "
                    f"{item.level} {item.score}"
                )
            if len(items) > limit:
                lines.append(f"  … and {len(items) - limit} more")
        calls = self.analyzed + self.failed
        lines.append(
            f"cost: {calls} calls, {self.prompt_tokens} prompt + {self.completion_tokens} "
            f"completion tokens, {self.seconds:.1f} s of analyzer time"
        )
        return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation, as PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def alerting(level: str | None, alert_from: str) -> bool:
    return level is not None and level in LEVELS and LEVELS.index(level) >= LEVELS.index(alert_from)


def build_report(items: Iterable[Compared], alert_from: str = "high") -> Report:
    """The report of a run's batches (the last result of each batch counts)."""
    last: dict[tuple[str, str], Compared] = {}
    for item in items:
        last[(item.camera, item.batch_id)] = item
    judged = [i for i in last.values() if i.level is not None]
    matrix = Counter((i.current_level or NONE, i.level or NONE) for i in judged)
    shifts = [
        float(i.score - i.current_score)
        for i in judged
        if i.score is not None and i.current_score is not None
    ]
    raised = tuple(
        i
        for i in judged
        if alerting(i.level, alert_from) and not alerting(i.current_level, alert_from)
    )
    lowered = tuple(
        i
        for i in judged
        if alerting(i.current_level, alert_from) and not alerting(i.level, alert_from)
    )
    return Report(
        analyzed=len(judged),
        failed=len(last) - len(judged),
        matrix=dict(matrix),
        changed=sum(1 for i in judged if i.changed),
        shift_median=statistics.median(shifts) if shifts else None,
        shift_p90=percentile([abs(s) for s in shifts], 0.9) if shifts else None,
        raised=raised,
        lowered=lowered,
        prompt_tokens=sum(i.prompt_tokens for i in last.values()),
        completion_tokens=sum(i.completion_tokens for i in last.values()),
        seconds=sum(i.latency_ms for i in last.values()) / 1000.0,
    )

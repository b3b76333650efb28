"""The deterministic analyzer: a risk score from what was seen, how many, how sure, and when.

Every label falls into a category. Each category present in the batch adds points:

    category  labels (examples)             base  per extra object  extra max  night bonus
    person    person                          28        10               3          37
    vehicle   car truck bus motorcycle ...    15         5               3          10
    animal    dog cat bird horse ...           5         2               3           0
    other     anything else                    3         1               3           2

    points(category) = (base + per_extra × min(count − 1, extra max) + night bonus if night)
                       × (0.6 + 0.4 × highest confidence in the category)
    risk_score       = clamp_score(sum of the categories' points); empty batch → 0

- count: a label's count is the most objects of that label seen in one file (the same person is
  in many frames of a batch, so counts are not summed over files); a category's count is the sum
  over its labels.
- night: a detection's LOCAL time (the batch's time zone) is in [22:00, 06:00). Without
  detections the window start decides.

Examples with the default thresholds: one person by day at 0.9 → 27 (low: someone passing by
day is ordinary, and an alarm system that calls it more teaches its users to ignore it); the
same at night → 62 (high); five persons by day at 1.0 → 58 (medium); two persons and a car at
night, all at 0.9 → 96 (critical); a cat at night → 5 (low).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from streams.analyzers.base import Analysis, BatchSummary
from streams.severity import DEFAULT_THRESHOLDS, SeverityThresholds, clamp_score, risk_level

RULES_NAME = "rules"
NIGHT_START_HOUR = 22
NIGHT_END_HOUR = 6


@dataclass(frozen=True, slots=True)
class CategoryWeight:
    name: str
    base: float
    per_extra: float
    extra_max: int
    night_bonus: float


PERSON = CategoryWeight("person", base=28, per_extra=10, extra_max=3, night_bonus=37)
VEHICLE = CategoryWeight("vehicle", base=15, per_extra=5, extra_max=3, night_bonus=10)
ANIMAL = CategoryWeight("animal", base=5, per_extra=2, extra_max=3, night_bonus=0)
OTHER = CategoryWeight("other", base=3, per_extra=1, extra_max=3, night_bonus=2)
CATEGORIES: tuple[CategoryWeight, ...] = (PERSON, VEHICLE, ANIMAL, OTHER)

VEHICLE_LABELS = frozenset(
    {"car", "truck", "bus", "motorcycle", "motorbike", "bicycle", "van", "boat", "train"}
)
ANIMAL_LABELS = frozenset(
    {
        "animal", "bear", "bird", "cat", "cow", "deer", "dog", "elephant", "fox", "giraffe",
        "horse", "rabbit", "raccoon", "sheep", "squirrel", "zebra",
    }
)  # fmt: skip

_IRREGULAR_PLURALS = {
    "person": "persons",
    "sheep": "sheep",
    "deer": "deer",
    "mouse": "mice",
    "knife": "knives",
}


def category_of(label: str) -> CategoryWeight:
    """The weight category of a detector label (case-insensitive)."""
    name = label.lower()
    if name == "person":
        return PERSON
    if name in VEHICLE_LABELS:
        return VEHICLE
    if name in ANIMAL_LABELS:
        return ANIMAL
    return OTHER


def is_night(local_time: datetime) -> bool:
    """Whether a local time lies in [22:00, 06:00)."""
    return local_time.hour >= NIGHT_START_HOUR or local_time.hour < NIGHT_END_HOUR


def label_counts(batch: BatchSummary) -> dict[str, int]:
    """Each label's count: the most objects of that label in one file."""
    per_file = Counter((line.file_name, line.label.lower()) for line in batch.detections)
    counts: dict[str, int] = {}
    for (_, label), count in per_file.items():
        counts[label] = max(counts.get(label, 0), count)
    return counts


def score_batch(
    batch: BatchSummary,
    thresholds: SeverityThresholds = DEFAULT_THRESHOLDS,
    categories: tuple[CategoryWeight, ...] = CATEGORIES,
) -> Analysis:
    """The rules' assessment of `batch` (pure; `latency_ms` is 0, the analyzer measures).
    `categories`: the weights, one per category name of `CATEGORIES`."""
    counts = label_counts(batch)
    night = _batch_at_night(batch)
    parts: list[str] = []
    total = 0.0
    for category in categories:
        labels = {
            label: n for label, n in counts.items() if category_of(label).name == category.name
        }
        if not labels:
            continue
        count = sum(labels.values())
        confidence = max(
            line.confidence for line in batch.detections if line.label.lower() in labels
        )
        raw = category.base + category.per_extra * min(count - 1, category.extra_max)
        if night:
            raw += category.night_bonus
        points = raw * (0.6 + 0.4 * confidence)
        total += points
        seen = ", ".join(f"{label} ×{n}" for label, n in sorted(labels.items()))
        parts.append(
            f"{category.name}: {seen} at confidence up to {confidence:.2f} → {points:.1f} points"
        )
    score = clamp_score(total)
    level = risk_level(score, thresholds)
    summary = _summary(batch, counts, night)
    when = "at night (22:00–06:00 local)" if night else "by day"
    if parts:
        reasoning = f"{'; '.join(parts)}; seen {when}. Total {score} → {level}."
    else:
        reasoning = f"No objects detected; seen {when}. Total 0 → {level}."
    return Analysis(
        risk_score=score,
        risk_level=level,
        summary=summary,
        reasoning=reasoning,
        analyzer=RULES_NAME,
        model=None,
        prompt_hash=None,
        latency_ms=0.0,
    )


class RulesAnalyzer:
    """`score_batch` behind the `Analyzer` protocol; no I/O, never fails on valid input."""

    name: str = RULES_NAME

    def __init__(
        self,
        thresholds: SeverityThresholds = DEFAULT_THRESHOLDS,
        *,
        categories: tuple[CategoryWeight, ...] = CATEGORIES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`clock` (seconds, monotonic) times each analysis; tests pass their own."""
        self.thresholds = thresholds
        self.categories = categories
        self._clock = clock

    async def analyze(self, batch: BatchSummary) -> Analysis:
        started = self._clock()
        analysis = score_batch(batch, self.thresholds, self.categories)
        return replace(analysis, latency_ms=(self._clock() - started) * 1000.0)

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """Weights and thresholds of the rules, as a candidate of `hsi reanalyze` gives them."""

    categories: tuple[CategoryWeight, ...] = CATEGORIES
    thresholds: SeverityThresholds = DEFAULT_THRESHOLDS

    def describe(self) -> str:
        """A canonical text of the configuration (hashed into a run's `config_hash`)."""
        weights = ";".join(
            f"{c.name}:{c.base:g},{c.per_extra:g},{c.extra_max},{c.night_bonus:g}"
            for c in self.categories
        )
        t = self.thresholds
        return f"rules[{weights}][{t.low_max},{t.medium_max},{t.high_max}]"


_WEIGHT_FIELDS = {"base": float, "per_extra": float, "extra_max": int, "night_bonus": float}


def parse_rules_config(raw: dict[str, object], base: RulesConfig | None = None) -> RulesConfig:
    """A `RulesConfig` from parsed TOML, each value given replacing `base`'s:

        [weights.person]      # person, vehicle, animal or other
        base = 30
        night_bonus = 35
        [thresholds]          # the highest score of each level
        low_max = 39
        medium_max = 69
        high_max = 89

    Raises `ValueError` naming the key at fault."""
    config = base or RulesConfig()
    unknown = set(raw) - {"weights", "thresholds"}
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; use [weights.*] and [thresholds]")
    by_name = {c.name: c for c in config.categories}
    weights = raw.get("weights", {})
    if not isinstance(weights, dict):
        raise ValueError("weights must be a table of categories: [weights.person]")
    for name, values in weights.items():
        if name not in by_name:
            raise ValueError(f"weights.{name}: no such category; use {', '.join(by_name)}")
        if not isinstance(values, dict):
            raise ValueError(f"weights.{name} must be a table")
        changes: dict[str, float | int] = {}
        for key, value in values.items():
            kind = _WEIGHT_FIELDS.get(key)
            if kind is None:
                raise ValueError(f"weights.{name}.{key}: use {', '.join(_WEIGHT_FIELDS)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"weights.{name}.{key} must be a number >= 0, got {value!r}")
            if kind is int and not isinstance(value, int):
                raise ValueError(f"weights.{name}.{key} must be a whole number, got {value!r}")
            changes[key] = kind(value)
        by_name[name] = replace(by_name[name], **changes)  # type: ignore[arg-type]
    thresholds = config.thresholds
    given = raw.get("thresholds", {})
    if not isinstance(given, dict):
        raise ValueError("thresholds must be a table: [thresholds]")
    for key, value in given.items():
        if key not in ("low_max", "medium_max", "high_max"):
            raise ValueError(f"thresholds.{key}: use low_max, medium_max, high_max")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError(f"thresholds.{key} must be a whole number 0-100, got {value!r}")
    try:
        thresholds = replace(thresholds, **given)
    except ValueError as exc:
        raise ValueError(f"thresholds: {exc}") from None
    return RulesConfig(tuple(by_name[c.name] for c in config.categories), thresholds)


def plural(label: str, count: int) -> str:
    """'1 car', '2 persons', '2 buses'."""
    if count == 1:
        return f"1 {label}"
    head, _, last = label.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{count} {head} {word}" if head else f"{count} {word}"


def join_words(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _batch_at_night(batch: BatchSummary) -> bool:
    moments = [line.captured_at for line in batch.detections] or [batch.window_start]
    return any(is_night(batch.local(moment)) for moment in moments)


def _summary(batch: BatchSummary, counts: dict[str, int], night: bool) -> str:
    order = {category.name: index for index, category in enumerate(CATEGORIES)}
    ranked = sorted(
        counts.items(), key=lambda item: (order[category_of(item[0]).name], -item[1], item[0])
    )
    what = join_words([plural(label, n) for label, n in ranked]) or "No objects"
    return f"{what} at {batch.display_name} {local_span(batch)}{' (night)' if night else ''}"


def local_span(batch: BatchSummary) -> str:
    """'at 10:15 CET', or 'between 23:58 and 00:02 CET': the window in the batch's local time,
    with the zone's name (each end's, when a change of summer time falls between them)."""
    start, end = batch.local(batch.window_start), batch.local(batch.window_end)
    first, last = start.strftime("%H:%M"), end.strftime("%H:%M")
    if start.tzname() != end.tzname():
        return f"between {first} {start.tzname()} and {last} {end.tzname()}"
    if first == last:
        return f"at {first} {start.tzname()}"
    return f"between {first} and {last} {start.tzname()}"

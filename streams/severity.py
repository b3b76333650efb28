"""Risk levels and the score → level mapping that every analyzer and alert rule shares.

A risk score is an integer 0–100. The operator sets the upper bound of each level; the defaults:

    score     level
    0–29      low
    30–59     medium
    60–84     high
    85–100    critical

Bad arguments (thresholds that do not rise, a NaN score) raise `ValueError`: they are programming
or configuration errors, never conditions to handle at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

MIN_SCORE = 0
MAX_SCORE = 100


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class SeverityThresholds:
    """Inclusive upper score of low, medium and high; anything above `high_max` is critical.

    Requires 0 <= low_max < medium_max < high_max <= 100 (high_max = 100 makes critical
    unreachable, which is allowed).
    """

    low_max: int = 29
    medium_max: int = 59
    high_max: int = 84

    def __post_init__(self) -> None:
        if not MIN_SCORE <= self.low_max < self.medium_max < self.high_max <= MAX_SCORE:
            raise ValueError(
                "severity thresholds must satisfy 0 <= low_max < medium_max < high_max <= 100, "
                f"got low_max={self.low_max} medium_max={self.medium_max} "
                f"high_max={self.high_max}"
            )

    def ranges(self) -> tuple[tuple[RiskLevel, int, int], ...]:
        """Each level with its inclusive score range, lowest first (for prompts and docs)."""
        return (
            (RiskLevel.LOW, MIN_SCORE, self.low_max),
            (RiskLevel.MEDIUM, self.low_max + 1, self.medium_max),
            (RiskLevel.HIGH, self.medium_max + 1, self.high_max),
            (RiskLevel.CRITICAL, self.high_max + 1, MAX_SCORE),
        )


DEFAULT_THRESHOLDS = SeverityThresholds()


def risk_level(score: int, thresholds: SeverityThresholds = DEFAULT_THRESHOLDS) -> RiskLevel:
    """The level of `score`: ≤ low_max low, ≤ medium_max medium, ≤ high_max high, else critical.

    Scores outside 0–100 are not rejected: below 0 is low, above 100 critical.
    """
    if score <= thresholds.low_max:
        return RiskLevel.LOW
    if score <= thresholds.medium_max:
        return RiskLevel.MEDIUM
    if score <= thresholds.high_max:
        return RiskLevel.HIGH
    return RiskLevel.CRITICAL


def clamp_score(value: float) -> int:
    """`value` rounded half up to an integer and clamped to 0–100; NaN raises ValueError.

    Half up (not Python's banker's rounding) so that 84.5 is 85 whatever the parity; ±infinity
    clamps to 100 / 0. Booleans are refused (TypeError): a `true` score is a bug, not 1.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a score must be a number, got {type(value).__name__}")
    if isinstance(value, int):
        return min(MAX_SCORE, max(MIN_SCORE, value))
    if math.isnan(value):
        raise ValueError("a score cannot be NaN")
    if value >= MAX_SCORE:
        return MAX_SCORE
    if value <= MIN_SCORE:
        return MIN_SCORE
    return math.floor(value + 0.5)

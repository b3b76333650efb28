"""Score → level mapping, thresholds and score clamping."""

from __future__ import annotations

import math

import pytest

from streams.severity import RiskLevel, SeverityThresholds, clamp_score, risk_level

CUSTOM = SeverityThresholds(low_max=10, medium_max=20, high_max=30)


@pytest.mark.parametrize(
    ("score", "thresholds", "expected"),
    [
        (0, SeverityThresholds(), RiskLevel.LOW),
        (29, SeverityThresholds(), RiskLevel.LOW),
        (30, SeverityThresholds(), RiskLevel.MEDIUM),
        (59, SeverityThresholds(), RiskLevel.MEDIUM),
        (60, SeverityThresholds(), RiskLevel.HIGH),
        (84, SeverityThresholds(), RiskLevel.HIGH),
        (85, SeverityThresholds(), RiskLevel.CRITICAL),
        (100, SeverityThresholds(), RiskLevel.CRITICAL),
        (-5, SeverityThresholds(), RiskLevel.LOW),
        (250, SeverityThresholds(), RiskLevel.CRITICAL),
        (10, CUSTOM, RiskLevel.LOW),
        (11, CUSTOM, RiskLevel.MEDIUM),
        (21, CUSTOM, RiskLevel.HIGH),
        (31, CUSTOM, RiskLevel.CRITICAL),
        (100, SeverityThresholds(high_max=100), RiskLevel.HIGH),
    ],
)
def test_risk_level_follows_the_thresholds(
    score: int, thresholds: SeverityThresholds, expected: RiskLevel
) -> None:
    """Each score maps onto the level whose inclusive upper bound it does not exceed."""
    assert risk_level(score, thresholds) is expected


def test_risk_level_defaults_to_the_standard_thresholds() -> None:
    """Without thresholds the defaults 29/59/84 apply."""
    assert [risk_level(s) for s in (29, 30, 84, 85)] == ["low", "medium", "high", "critical"]


@pytest.mark.parametrize(
    ("low", "medium", "high"),
    [(30, 30, 80), (50, 40, 80), (10, 20, 101), (-1, 20, 30), (10, 90, 90)],
)
def test_thresholds_must_rise_within_the_score_range(low: int, medium: int, high: int) -> None:
    """Thresholds that do not rise strictly inside 0–100 are refused."""
    with pytest.raises(ValueError, match="must satisfy"):
        SeverityThresholds(low_max=low, medium_max=medium, high_max=high)


def test_ranges_cover_zero_to_hundred_without_gaps() -> None:
    """The ranges used in prompts tile 0–100 exactly."""
    ranges = SeverityThresholds().ranges()
    assert ranges == (
        (RiskLevel.LOW, 0, 29),
        (RiskLevel.MEDIUM, 30, 59),
        (RiskLevel.HIGH, 60, 84),
        (RiskLevel.CRITICAL, 85, 100),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (42, 42),
        (100, 100),
        (-3, 0),
        (150, 100),
        (10**30, 100),
        (-(10**30), 0),
        (41.4, 41),
        (41.5, 42),
        (42.5, 43),
        (84.5, 85),
        (99.6, 100),
        (-0.4, 0),
        (0.49, 0),
        (1e300, 100),
        (math.inf, 100),
        (-math.inf, 0),
    ],
)
def test_clamp_score_rounds_half_up_into_range(value: float, expected: int) -> None:
    """Scores are rounded half up and clamped to 0–100."""
    result = clamp_score(value)
    assert result == expected
    assert type(result) is int


def test_clamp_score_refuses_nan() -> None:
    """NaN has no place on the scale."""
    with pytest.raises(ValueError, match="NaN"):
        clamp_score(math.nan)


@pytest.mark.parametrize("value", [True, "50", None])
def test_clamp_score_refuses_non_numbers(value: object) -> None:
    """Booleans, strings and None are type errors, not scores."""
    with pytest.raises(TypeError):
        clamp_score(value)  # type: ignore[arg-type]


def test_risk_level_values_are_plain_strings() -> None:
    """Levels serialize as their lower-case names."""
    assert [str(level) for level in RiskLevel] == ["low", "medium", "high", "critical"]

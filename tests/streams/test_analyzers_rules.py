"""The rules analyzer: scores from object types, counts, confidence and local time of day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from streams.analyzers import (
    AnalyzerConfigError,
    BatchSummary,
    DetectionLine,
    LLMAnalyzer,
    LLMConfig,
    RulesAnalyzer,
    build_analyzer,
    score_batch,
)
from streams.analyzers.rules import is_night, label_counts, plural
from streams.schemas import BatchClosed, BatchDetection, Box, DetectedObject
from streams.severity import RiskLevel, SeverityThresholds
from streams.stages.analyze import summarize

DAY = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
NIGHT = datetime(2024, 1, 15, 23, 10, tzinfo=UTC)


def line(label: str, confidence: float, at: datetime, file_name: str = "f1.jpg") -> DetectionLine:
    return DetectionLine(label, confidence, at, file_name)


def summary_of(
    *lines: DetectionLine,
    start: datetime | None = None,
    end: datetime | None = None,
    zone: str | tzinfo = "UTC",
) -> BatchSummary:
    moments = [d.captured_at for d in lines] or [DAY]
    return BatchSummary(
        camera="Front Door",
        window_start=start or min(moments),
        window_end=end or max(moments),
        detections=tuple(lines),
        timezone=zone,
    )


SCORE_CASES: list[tuple[str, BatchSummary, int, RiskLevel]] = [
    ("empty batch by day", summary_of(), 0, RiskLevel.LOW),
    ("one person by day", summary_of(line("person", 0.9, DAY)), 27, RiskLevel.LOW),
    ("one person at night", summary_of(line("person", 0.9, NIGHT)), 62, RiskLevel.HIGH),
    ("unsure person by day", summary_of(line("person", 0.5, DAY)), 22, RiskLevel.LOW),
    ("car by day", summary_of(line("car", 0.8, DAY)), 14, RiskLevel.LOW),
    ("car at night", summary_of(line("car", 0.8, NIGHT)), 23, RiskLevel.LOW),
    ("cat at night", summary_of(line("cat", 0.9, NIGHT)), 5, RiskLevel.LOW),
    ("unknown object by day", summary_of(line("backpack", 1.0, DAY)), 3, RiskLevel.LOW),
    (
        "two persons and a car at night",
        summary_of(
            line("person", 0.9, NIGHT),
            line("person", 0.8, NIGHT),
            line("car", 0.9, NIGHT + timedelta(seconds=40), "f2.jpg"),
        ),
        96,
        RiskLevel.CRITICAL,
    ),
    (
        "the same person in five frames counts once",
        summary_of(
            *(line("person", 0.9, DAY + timedelta(seconds=i), f"f{i}.jpg") for i in range(5))
        ),
        27,
        RiskLevel.LOW,
    ),
    (
        "five persons in one frame, extra capped at three",
        summary_of(*(line("person", 1.0, DAY) for _ in range(5))),
        58,
        RiskLevel.MEDIUM,
    ),
    (
        "many people at night saturate at 100",
        summary_of(
            *(line("person", 1.0, NIGHT) for _ in range(4)),
            *(line("car", 1.0, NIGHT) for _ in range(4)),
        ),
        100,
        RiskLevel.CRITICAL,
    ),
    (
        "dog and car by day add up",
        summary_of(line("dog", 1.0, DAY), line("truck", 1.0, DAY)),
        20,
        RiskLevel.LOW,
    ),
]


@pytest.mark.parametrize(
    ("batch", "score", "level"), [pytest.param(*case[1:], id=case[0]) for case in SCORE_CASES]
)
def test_score_follows_the_weight_table(batch: BatchSummary, score: int, level: RiskLevel) -> None:
    """Scores come from the documented table: type, count, confidence, night."""
    analysis = score_batch(batch)
    assert (analysis.risk_score, analysis.risk_level) == (score, level)
    assert analysis.analyzer == "rules"
    assert analysis.model is None
    assert analysis.prompt_hash is None


@pytest.mark.parametrize(
    ("utc_moment", "zone", "night"),
    [
        (datetime(2024, 1, 15, 21, 30, tzinfo=UTC), "UTC", False),
        (datetime(2024, 1, 15, 21, 30, tzinfo=UTC), "Europe/Berlin", True),  # 22:30 CET
        (datetime(2024, 7, 15, 20, 30, tzinfo=UTC), "Europe/Berlin", True),  # 22:30 CEST
        (datetime(2024, 7, 15, 19, 30, tzinfo=UTC), "Europe/Berlin", False),  # 21:30 CEST
        (datetime(2024, 1, 16, 3, 0, tzinfo=UTC), "America/New_York", True),  # 22:00 EST
        (datetime(2024, 1, 16, 2, 59, tzinfo=UTC), "America/New_York", False),  # 21:59 EST
        (datetime(2024, 1, 15, 23, 30, tzinfo=UTC), "Asia/Tokyo", False),  # 08:30 JST
        (datetime(2024, 1, 15, 20, 59, tzinfo=UTC), "Asia/Tokyo", True),  # 05:59 JST
        (datetime(2024, 1, 15, 13, 30, tzinfo=UTC), ZoneInfo("Asia/Tokyo"), True),  # 22:30 JST
        (datetime(2024, 1, 15, 21, 0, tzinfo=UTC), "Asia/Tokyo", False),  # 06:00 JST
        (datetime(2024, 1, 15, 23, 0, tzinfo=UTC), timezone(timedelta(hours=-2)), False),
        (datetime(2024, 1, 15, 12, 0), timezone(timedelta(hours=11)), True),  # naive = UTC
    ],
)
def test_night_is_judged_in_the_local_time_zone(
    utc_moment: datetime, zone: str | tzinfo, night: bool
) -> None:
    """The same instant is night in one zone and day in another."""
    analysis = score_batch(summary_of(line("person", 0.9, utc_moment), zone=zone))
    assert analysis.risk_score == (62 if night else 27)
    assert analysis.summary.endswith("(night)") is night


@pytest.mark.parametrize(
    ("hour", "minute", "night"),
    [(5, 59, True), (6, 0, False), (12, 0, False), (21, 59, False), (22, 0, True), (0, 0, True)],
)
def test_night_runs_from_22_to_6(hour: int, minute: int, night: bool) -> None:
    """Night is the half-open local interval [22:00, 06:00)."""
    assert is_night(datetime(2024, 1, 15, hour, minute)) is night


def test_batch_across_midnight_is_night_and_says_so() -> None:
    """A window from 23:58 to 00:02 local is night and shown with both clock times."""
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 1, 15, 23, 58, tzinfo=berlin)
    batch = summary_of(
        line("person", 0.9, start),
        line("person", 0.9, start + timedelta(minutes=3), "f2.jpg"),
        start=start,
        end=start + timedelta(minutes=4),
        zone="Europe/Berlin",
    )
    analysis = score_batch(batch)
    assert analysis.risk_score == 62
    assert analysis.summary == "1 person at Front Door between 23:58 and 00:02 CET (night)"


def test_morning_after_midnight_window_is_day() -> None:
    """A window from 06:00 to 06:05 local is day, even right after the night ends."""
    start = datetime(2024, 1, 16, 6, 0, tzinfo=UTC)
    analysis = score_batch(summary_of(line("person", 0.9, start), end=start + timedelta(minutes=5)))
    assert analysis.summary == "1 person at Front Door between 06:00 and 06:05 UTC"


def test_summary_and_reasoning_state_the_facts() -> None:
    """Texts list counts per label, camera, local times, night, and the points per category."""
    batch = summary_of(
        line("car", 0.9, NIGHT + timedelta(seconds=70), "f2.jpg"),
        line("person", 0.9, NIGHT),
        line("person", 0.8, NIGHT),
    )
    analysis = score_batch(batch)
    assert (
        analysis.summary == "2 persons and 1 car at Front Door between 23:10 and 23:11 UTC (night)"
    )
    assert "person ×2" in analysis.reasoning
    assert "car ×1" in analysis.reasoning
    assert "night" in analysis.reasoning
    assert analysis.reasoning.endswith("Total 96 → critical.")


def test_empty_batch_summary_says_nothing_was_seen() -> None:
    """A batch without detections still gets a readable summary."""
    analysis = score_batch(summary_of())
    assert analysis.summary == "No objects at Front Door at 12:00 UTC"
    assert analysis.reasoning.startswith("No objects detected")


def test_custom_thresholds_change_only_the_level() -> None:
    """The score is the same; the level follows the operator's thresholds."""
    batch = summary_of(line("person", 0.9, DAY))
    analysis = score_batch(batch, SeverityThresholds(low_max=10, medium_max=20, high_max=30))
    assert (analysis.risk_score, analysis.risk_level) == (27, RiskLevel.HIGH)


@pytest.mark.parametrize(
    ("label", "count", "expected"),
    [
        ("person", 1, "1 person"),
        ("person", 2, "2 persons"),
        ("car", 3, "3 cars"),
        ("bus", 2, "2 buses"),
        ("sheep", 4, "4 sheep"),
        ("traffic light", 2, "2 traffic lights"),
        ("party", 2, "2 parties"),
        ("toy", 2, "2 toys"),
        ("knife", 2, "2 knives"),
    ],
)
def test_plural_reads_naturally(label: str, count: int, expected: str) -> None:
    """Counts in summaries use English plurals."""
    assert plural(label, count) == expected


def test_label_counts_take_the_most_in_one_file() -> None:
    """A label's count is its maximum within one file, not its total over files."""
    batch = summary_of(
        line("person", 0.9, DAY, "a.jpg"),
        line("person", 0.9, DAY, "b.jpg"),
        line("person", 0.9, DAY, "b.jpg"),
        line("Car", 0.9, DAY, "a.jpg"),
    )
    assert label_counts(batch) == {"person": 2, "car": 1}


def test_unknown_time_zone_is_a_config_error() -> None:
    """A misspelt zone name fails with a hint, not with a bare KeyError."""
    with pytest.raises(AnalyzerConfigError, match="Europe/Berlin"):
        score_batch(summary_of(line("person", 0.9, DAY), zone="Mars/Olympus"))


def test_window_must_not_end_before_it_starts() -> None:
    """A reversed window is a caller bug."""
    with pytest.raises(ValueError, match="before"):
        summary_of(start=DAY, end=DAY - timedelta(seconds=1))


async def test_rules_analyzer_measures_latency() -> None:
    """The async wrapper returns the pure result with the latency its clock measured, in ms."""
    readings = iter([100.0, 100.25])
    analyzer = RulesAnalyzer(clock=lambda: next(readings))
    batch = summary_of(line("person", 0.9, NIGHT))
    analysis = await analyzer.analyze(batch)
    await analyzer.aclose()
    assert analysis.risk_score == score_batch(batch).risk_score
    assert analysis.latency_ms == 250.0
    assert analyzer.name == "rules"


async def test_rules_analyzer_times_with_a_real_clock_by_default() -> None:
    """Without a clock of its own the analyzer still measures a positive latency."""
    analysis = await RulesAnalyzer().analyze(summary_of(line("person", 0.9, NIGHT)))
    assert analysis.latency_ms > 0.0


@pytest.mark.parametrize(("backend", "kind"), [("rules", RulesAnalyzer), ("LLM", LLMAnalyzer)])
async def test_build_analyzer_picks_the_backend(backend: str, kind: type) -> None:
    """The factory builds the named backend without connecting anywhere."""
    analyzer = build_analyzer(backend, llm=LLMConfig(base_url="http://127.0.0.1:9"))
    assert isinstance(analyzer, kind)
    await analyzer.aclose()


def test_build_analyzer_refuses_unknown_backends() -> None:
    """A typo in ANALYZER_BACKEND names the accepted values."""
    with pytest.raises(AnalyzerConfigError, match="rules"):
        build_analyzer("gpt")


def test_a_window_across_the_end_of_summer_time_names_both_zones() -> None:
    """Summer time ends at 03:00 CEST (02:00 CET): each end of the window says its own zone."""
    start = datetime(2026, 10, 25, 0, 50, tzinfo=UTC)  # 02:50 CEST
    batch = summary_of(
        line("person", 0.9, start), end=start + timedelta(minutes=20), zone="Europe/Berlin"
    )
    assert score_batch(batch).summary.startswith(
        "1 person at Front Door between 02:50 CEST and 02:10 CET"
    )


def test_the_summary_names_the_camera_by_its_folder() -> None:
    """The analyze stage's view of a batch names the camera as its files' folder does."""
    batch = BatchClosed(
        camera_id="front_door",
        batch_id="b",
        detections=(
            BatchDetection(
                entry_id="2-0",
                file_entry_id="1-0",
                path="Front Door/FI9821P_C4D655300BB8/snap/MDAlarm_20261206-101500.jpg",
                captured_at=DAY,
                objects=(
                    DetectedObject(
                        label="person", confidence=0.9, bbox=Box(x=1, y=2, width=3, height=4)
                    ),
                ),
            ),
        ),
        window_start=DAY,
        window_end=DAY,
        close_reason="idle",
        detection_count=1,
        object_types=("person",),
        max_confidence=0.9,
        fast_path=False,
        closed_at=DAY,
    )
    view = summarize(batch, "UTC")
    assert (view.camera, view.display_name) == ("front_door", "Front Door")
    assert score_batch(view).summary.startswith("1 person at Front Door at ")

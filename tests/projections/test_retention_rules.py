"""Retention rules: parsing, each camera's horizon and which media files a level rule deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.errors import RetentionError
from projections.retention_rules import (
    CameraRetention,
    MediaCandidate,
    RetentionRules,
    media_past_rules,
    parse_rules,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
RULE = CameraRetention(days=30, media={"low": 7, "none": 3, "high": 365, "unrated": 30})


def _file(days_old: float, *levels: str, detected: bool = True) -> MediaCandidate:
    return MediaCandidate(
        path=f"{days_old}-{'-'.join(levels)}.jpg",
        captured_at=NOW - timedelta(days=days_old),
        levels=frozenset(levels),
        detected=detected,
    )


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (_file(8, "low"), "low"),  # past its level's 7 days
        (_file(6, "low"), None),  # not yet
        (_file(4), "none"),  # in no event: 3 days
        (_file(2), None),
        (_file(8, "low", "high"), None),  # kept as long as its longest level
        (_file(400, "low", "high"), "high"),
        (_file(31, "unrated"), "unrated"),
        (_file(20, "medium"), None),  # no rule for medium: stays with its row
        (_file(200, "medium", "low"), None),  # one level without a rule keeps it
        (_file(8, "low", detected=False), None),  # detection pending: never by a rule
    ],
)
def test_media_past_rules(candidate: MediaCandidate, expected: str | None) -> None:
    """A file goes when older than its longest level's rule, detection done, every level ruled."""
    chosen = media_past_rules([candidate], RULE, NOW)
    assert [level for _, level in chosen] == ([] if expected is None else [expected])


@pytest.mark.parametrize(
    ("rule", "horizon", "shortest"),
    [
        (CameraRetention(30), 30, 30),
        (CameraRetention(30, {"low": 7}), 30, 7),
        (CameraRetention(30, {"low": 7, "critical": 365}), 365, 7),
    ],
)
def test_horizon_is_the_longest_rule(rule: CameraRetention, horizon: int, shortest: int) -> None:
    """Rows and entries live as long as the camera's days or its longest media rule."""
    assert (rule.horizon_days, rule.shortest_days) == (horizon, shortest)
    assert rule.cutoff(NOW) == NOW - timedelta(days=horizon)


def test_rules_parse_with_camera_overrides() -> None:
    """[media] applies to every camera; a camera's own table overrides days and some levels."""
    rules = parse_rules(
        {
            "media": {"low": 7, "high": 365},
            "cameras": {"front_door": {"days": 400, "media": {"low": 14}}, "garage": {}},
        },
        default_days=30,
    )
    assert rules.for_camera("front_door") == CameraRetention(400, {"low": 14, "high": 365})
    assert rules.for_camera("garage") == CameraRetention(30, {"low": 7, "high": 365})
    assert rules.for_camera("porch") == CameraRetention(30, {"low": 7, "high": 365})
    assert rules.for_camera("porch").horizon_days == 365
    assert parse_rules({}, 30) == RetentionRules(30)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"media": {"hgih": 3}}, "unknown level hgih"),
        ({"media": {"low": 0}}, "media.low must be a whole number of days"),
        ({"media": {"low": "7"}}, "media.low must be a whole number"),
        ({"media": {"low": True}}, "media.low must be a whole number"),
        ({"medias": {}}, "unknown table medias"),
        ({"cameras": {"Front Door": {}}}, "is not a camera id"),
        ({"cameras": {"front": {"hours": 3}}}, "may set only days"),
        ({"cameras": {"front": {"days": 9999}}}, "cameras.front.days must be"),
        ({"cameras": {"front": {"media": {"low": 4000}}}}, "cameras.front.media.low must be"),
    ],
)
def test_bad_rules_say_what_to_fix(document: dict[str, Any], message: str) -> None:
    """A mistake in the rules file names the key and what it should be."""
    with pytest.raises(RetentionError, match=message):
        parse_rules(document, 30)


def test_media_rules_need_media_deletion_on() -> None:
    """Rules that delete media are refused while RETENTION_DELETE_MEDIA is false."""
    rules = parse_rules({"media": {"low": 7}}, 30)
    with pytest.raises(RetentionError, match="RETENTION_DELETE_MEDIA=true"):
        rules.check(delete_media=False)
    rules.check(delete_media=True)
    parse_rules({"cameras": {"front": {"days": 90}}}, 30).check(delete_media=False)

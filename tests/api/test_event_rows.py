"""The listing's row builder (`event_values`, written by orjson) against `event_item` (the
times and the id as strings): the same JSON, whatever the session's time zone."""

from __future__ import annotations

import uuid
from collections import namedtuple
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest

from hsi.api.queries.events import _LIST_KEYS, event_item, event_values
from hsi.api.responses import JSON

Row = namedtuple("Row", _LIST_KEYS)  # type: ignore[misc]


def _row(zone: timezone | ZoneInfo, *, analyzed: bool, micro: int) -> Row:
    at = datetime(2026, 1, 10, 12, 0, 0, micro, tzinfo=UTC).astimezone(zone)
    return Row(
        id=str(uuid.uuid4()),
        camera_id="front_door",
        window_start=at,
        window_end=at + timedelta(seconds=30),
        close_reason="window",
        detection_count=3,
        object_types=["person"] if analyzed else None,
        zones=None,
        max_confidence=0.7300000190734863,
        fast_path=False,
        closed_at=at + timedelta(seconds=31),
        analysis_status="completed" if analyzed else "pending",
        risk_score=45 if analyzed else None,
        risk_level="medium" if analyzed else None,
        summary="a person at the door" if analyzed else None,
        analyzer="rules" if analyzed else None,
        model=None,
        analyzed_at=at + timedelta(seconds=40) if analyzed else None,
    )


@pytest.mark.parametrize("zone", [UTC, ZoneInfo("Etc/UTC"), ZoneInfo("Europe/Paris")])
@pytest.mark.parametrize("analyzed", [True, False])
@pytest.mark.parametrize("micro", [0, 123456])
def test_event_values_write_what_event_item_says(
    zone: timezone | ZoneInfo, analyzed: bool, micro: int
) -> None:
    row = _row(zone, analyzed=analyzed, micro=micro)
    fast = orjson.loads(JSON(event_values(tuple(row))).body)
    assert fast == event_item(row)  # type: ignore[arg-type]
    assert list(fast) == [*_LIST_KEYS, "links"]

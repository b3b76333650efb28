"""Keyset cursors: round trip, and every malformed or foreign cursor refused as `cursor`."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from hsi.api.cursor import Cursor, decode_cursor, encode_cursor
from hsi.api.responses import BadParameter

AT = datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


def test_cursor_round_trips_with_microseconds() -> None:
    """A cursor decodes to the exact sort key it was made from."""
    cursor = Cursor("events", AT, ("00000000-0000-0000-0000-000000000001",))
    token = encode_cursor(cursor)
    assert "=" not in token
    assert "+" not in token
    assert "/" not in token
    assert decode_cursor(token, "events", 1) == cursor


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64!",
        "e30",  # {}
        _token([1, 2]),
        _token({"v": 1, "k": "events", "t": "2026-01-31T12:00:00Z"}),
        _token({"v": 1, "k": "events", "t": "yesterday", "id": ["a"]}),
        _token({"v": 1, "k": "events", "t": "2026-01-31T12:00:00", "id": ["a"]}),  # naive
        _token({"v": 1, "k": "events", "t": "2026-01-31T12:00:00Z", "id": ["a", "b"]}),
        _token({"v": 1, "k": "events", "t": "2026-01-31T12:00:00Z", "id": [1]}),
        _token({"v": 2, "k": "events", "t": "2026-01-31T12:00:00Z", "id": ["a"]}),
        _token({"v": 1, "k": "detections", "t": "2026-01-31T12:00:00Z", "id": ["a"]}),
        _token({"v": 1, "k": "events", "t": "2026-01-31T12:00:00Z", "id": ["a"], "x": 1}),
        "A" * 2000,
    ],
)
def test_bad_cursors_are_refused(token: str) -> None:
    """Tampered, truncated, foreign or outdated cursors are a 400 naming `cursor`."""
    with pytest.raises(BadParameter) as caught:
        decode_cursor(token, "events", 1)
    assert caught.value.parameter == "cursor"


def test_tampered_cursor_is_refused() -> None:
    """Flipping characters of a real cursor breaks it."""
    token = encode_cursor(Cursor("events", AT, ("00000000-0000-0000-0000-000000000001",)))
    broken = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    with pytest.raises(BadParameter):
        decode_cursor(broken[:-3], "events", 1)
    with pytest.raises(BadParameter):
        decode_cursor(broken + "%%", "events", 1)

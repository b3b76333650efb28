"""Opaque keyset cursors: base64url (unpadded) JSON of the last item's sort key.

    {"v": 1, "k": "events", "t": "2026-01-31T12:00:00.123456Z", "id": ["<uuid>"]}

`k` names the listing, so an events cursor is refused by /api/detections; `t` is the timestamp
of the sort key and `id` its tie-breakers. A cursor grants nothing (it only moves the start of
a listing the caller may read anyway), so it is validated, not signed: anything that does not
decode to exactly this shape is a 400 naming `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from hsi.api.responses import BadParameter, iso

VERSION = 1
MAX_CURSOR_LENGTH = 1024


@dataclass(frozen=True)
class Cursor:
    kind: str
    at: datetime
    key: tuple[str, ...]


def encode_cursor(cursor: Cursor) -> str:
    payload = {"v": VERSION, "k": cursor.kind, "t": iso(cursor.at), "id": list(cursor.key)}
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode("ascii")


def decode_cursor(token: str, kind: str, key_length: int, *, listing: str | None = None) -> Cursor:
    """The cursor of listing `kind` whose key has `key_length` parts; `BadParameter` otherwise
    (a cursor of another kind is refused as not one of `listing`, by default `kind`)."""
    if not token or len(token) > MAX_CURSOR_LENGTH:
        raise _bad()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad() from None
    if not isinstance(payload, dict) or set(payload) != {"v", "k", "t", "id"}:
        raise _bad()
    if payload["v"] != VERSION:
        raise BadParameter("cursor", "was made by another version of the API; start over")
    if payload["k"] != kind:
        raise BadParameter("cursor", f"belongs to another listing, not {listing or kind}")
    key = payload["id"]
    if (
        not isinstance(key, list)
        or len(key) != key_length
        or not all(isinstance(part, str) and 0 < len(part) <= 200 for part in key)
        or not isinstance(payload["t"], str)
    ):
        raise _bad()
    try:
        at = datetime.fromisoformat(payload["t"])
    except ValueError:
        raise _bad() from None
    if at.tzinfo is None:
        raise _bad()
    return Cursor(kind, at.astimezone(UTC), tuple(key))


def rank_key(cursor: Cursor) -> tuple[float, uuid.UUID] | None:
    """The (rank, id) of a ranked listing's cursor (a search's), or None when its key is not:
    a finite rank of at least 0, as Python spells a float, and a UUID."""
    if len(cursor.key) != 2:
        return None
    try:
        rank, key = float(cursor.key[0]), uuid.UUID(cursor.key[1])
    except ValueError:
        return None
    return (rank, key) if math.isfinite(rank) and rank >= 0 else None


def _bad() -> BadParameter:
    return BadParameter("cursor", "is not a cursor of this API; pass next_cursor unchanged")

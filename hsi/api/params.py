"""Query-parameter parsing: pure functions from strings to values, raising `BadParameter` (400)
with the parameter's name. `Query` refuses parameters an endpoint does not declare, so a typo
(`?risk=high`) is an error instead of a silently unfiltered answer."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hsi.api.cursor import Cursor, decode_cursor, rank_key
from hsi.api.responses import BadParameter
from streams.names import is_camera_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
LABEL_PATTERN = r"^[A-Za-z0-9 _.-]{1,64}$"  # an object type such as `person`
_LABEL = re.compile(LABEL_PATTERN)


class Query:
    """The query string of one request, checked against the names an endpoint accepts."""

    def __init__(self, items: Iterable[tuple[str, str]], accepted: Collection[str]) -> None:
        self._items = list(items)
        for name, _ in self._items:
            if name not in accepted:
                known = ", ".join(sorted(accepted)) or "none"
                raise BadParameter(name, f"unknown parameter; this route accepts: {known}")

    def get(self, name: str) -> str | None:
        """The one value of `name`, or None; given twice is an error."""
        values = [value for key, value in self._items if key == name]
        if len(values) > 1:
            raise BadParameter(name, "given more than once; pass it once")
        return values[0] if values else None

    def get_list(self, name: str) -> list[str]:
        """Every value of `name`, repeated (`?a=x&a=y`) or comma separated (`?a=x,y`); an empty
        one (`?a=`, `?a=x,`) is an error, not a silently dropped filter."""
        out: list[str] = []
        for key, value in self._items:
            if key == name:
                parts = [part.strip() for part in value.split(",")]
                if not all(parts):
                    raise BadParameter(name, "an empty value; leave the parameter out instead")
                out.extend(parts)
        return out


def parse_limit(value: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if value is None:
        return default
    return _integer("limit", value, 1, maximum)


def parse_int(name: str, value: str | None, low: int, high: int) -> int | None:
    return None if value is None else _integer(name, value, low, high)


def _integer(name: str, value: str, low: int, high: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", text):
        raise BadParameter(name, f"{value!r} is not an integer; expected {low}–{high}")
    number = int(text)
    if not low <= number <= high:
        raise BadParameter(name, f"{number} is out of range; expected {low}–{high}")
    return number


def parse_float(name: str, value: str | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        raise BadParameter(name, f"{value!r} is not a number; expected {low}–{high}") from None
    if math.isnan(number) or not low <= number <= high:
        raise BadParameter(name, f"{value!r} is out of range; expected {low}–{high}")
    return number


def parse_datetime(name: str, value: str | None) -> datetime | None:
    """ISO 8601 (`2026-01-31T12:00:00Z`, `…+02:00`, a date); without an offset it is UTC.

    A `+` of an offset that arrived unencoded reads as a space: it is taken back as `+`.
    """
    if value is None:
        return None
    text = value.strip()
    if "T" in text:
        text = text.replace(" ", "+")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(
            name, f"{value!r} is not an ISO 8601 time; use e.g. 2026-01-31T12:00:00Z"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@dataclass(frozen=True)
class TimeRange:
    since: datetime | None
    until: datetime | None


def parse_time_range(since: str | None, until: str | None) -> TimeRange:
    start = parse_datetime("since", since)
    end = parse_datetime("until", until)
    if start is not None and end is not None and end <= start:
        raise BadParameter("until", "must be later than since")
    return TimeRange(start, end)


def parse_window(query: Query) -> TimeRange:
    """`since` and `until` of a query string."""
    return parse_time_range(query.get("since"), query.get("until"))


def parse_choices(name: str, values: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """Values that must each be one of `allowed` (duplicates dropped, order kept)."""
    out: list[str] = []
    for value in values:
        if value not in allowed:
            raise BadParameter(name, f"{value!r} is not one of {', '.join(allowed)}")
        if value not in out:
            out.append(value)
    return tuple(out)


def parse_camera_id(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not is_camera_id(value):
        raise BadParameter(name, f"{value!r} is not a camera id (lower case, digits, _)")
    return value


def parse_camera(query: Query) -> str | None:
    """`camera_id` of a query string."""
    return parse_camera_id("camera_id", query.get("camera_id"))


def parse_labels(name: str, values: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if not _LABEL.fullmatch(value):
            raise BadParameter(name, f"{value!r} is not an object type (letters, digits, _ . -)")
    return tuple(dict.fromkeys(values))


ZONE_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"  # as `streams.zones` names zones
_ZONE = re.compile(ZONE_PATTERN)


def parse_zones(name: str, values: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if not _ZONE.fullmatch(value):
            raise BadParameter(name, f"{value!r} is not a zone name (a-z, 0-9, _ and -)")
    return tuple(dict.fromkeys(values))


def parse_uuid(value: str) -> uuid.UUID | None:
    """A UUID from a path segment, or None (the caller answers 404: no such thing)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def parse_ranked_page(query: Query, cursor_kind: str, listing: str) -> tuple[int, Cursor | None]:
    """`limit` and `cursor` of a listing keyed by (rank, time, uuid), such as a search: the
    cursor's key is the rank as a number and the uuid (400 naming the bad parameter)."""
    limit = parse_limit(query.get("limit"))
    token = query.get("cursor")
    after = None if token is None else decode_cursor(token, cursor_kind, 2, listing=listing)
    if after is not None and rank_key(after) is None:
        raise BadParameter("cursor", "is not a cursor of this API; pass next_cursor unchanged")
    return limit, after


def parse_uuid_page(query: Query, cursor_kind: str) -> tuple[int, Cursor | None]:
    """`limit` and `cursor` of a listing keyed by (time, uuid): 400 naming the bad one."""
    limit = parse_limit(query.get("limit"))
    token = query.get("cursor")
    after = None if token is None else decode_cursor(token, cursor_kind, 1)
    if after is not None and parse_uuid(after.key[0]) is None:
        raise BadParameter("cursor", "is not a cursor of this API; pass next_cursor unchanged")
    return limit, after

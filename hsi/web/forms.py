"""The filter form of /events: query string → the API's `EventFilters`, and back to links.

A GET form sends every field, empty ones included, and its times come from
`<input type="datetime-local">` without an offset: they are read in the home's zone. Values the
API would refuse are reported per field and left out of the filter, so the page still shows
events and says what was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from urllib.parse import urlencode

from hsi.api.params import parse_camera_id, parse_choices, parse_labels
from hsi.api.queries.events import RISK_LEVELS, EventFilters
from hsi.api.queries.search import MAX_SEARCH_LENGTH, search_text
from hsi.api.responses import BadParameter

FIELDS = ("q", "camera_id", "risk_level", "object_type", "since", "until")
PAGING = ("cursor", "before")


@dataclass(frozen=True)
class EventForm:
    q: str = ""  # the search, whitespace collapsed (as typed when it is refused)
    camera_id: str = ""
    risk_levels: tuple[str, ...] = ()
    object_type: str = ""
    since: str = ""  # as typed, shown back in the form
    until: str = ""
    cursor: str = ""  # page after this (the API's next_cursor)
    before: str = ""  # page before this (the first item of the page that linked here)
    errors: dict[str, str] = field(default_factory=dict)

    def query(self, **paging: str) -> str:
        """The query string of these filters plus `paging` (cursor or before), without empties."""
        pairs: list[tuple[str, str]] = []
        if self.q:
            pairs.append(("q", self.q))
        if self.camera_id:
            pairs.append(("camera_id", self.camera_id))
        pairs.extend(("risk_level", level) for level in self.risk_levels)
        for name in ("object_type", "since", "until"):
            value = getattr(self, name)
            if value:
                pairs.append((name, value))
        pairs.extend((k, v) for k, v in paging.items() if v)
        return urlencode(pairs)

    @property
    def filtered(self) -> bool:
        return bool(
            self.q
            or self.camera_id
            or self.risk_levels
            or self.object_type
            or self.since
            or self.until
        )

    @property
    def search(self) -> str | None:
        """The search text to run, or None (no search, or one that was refused)."""
        return self.q if self.q and "q" not in self.errors else None


def parse_local_time(text: str, zone: tzinfo) -> datetime:
    """`2026-01-10T13:00` in `zone` (an offset or `Z`, if given, wins); ValueError otherwise."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed


def parse_event_form(
    items: Sequence[tuple[str, str]], zone: tzinfo
) -> tuple[EventForm, EventFilters]:
    """The form as typed (with an error per bad field) and the filters of its good fields."""

    def one(name: str) -> str:
        return next((v.strip() for k, v in items if k == name and v.strip()), "")

    errors: dict[str, str] = {}
    q = one("q")
    try:
        q = search_text(q or None) or ""
    except BadParameter:
        errors["q"] = (
            f"A search is at most {MAX_SEARCH_LENGTH} characters: words, no control characters."
        )
    camera_id: str | None = None
    try:
        camera_id = parse_camera_id("camera_id", one("camera_id") or None)
    except BadParameter:
        errors["camera_id"] = "Not a camera id: lower-case letters, digits and _."
    levels: tuple[str, ...] = ()
    try:
        levels = parse_choices(
            "risk_level", [v for k, v in items if k == "risk_level" and v], RISK_LEVELS
        )
    except BadParameter:
        errors["risk_level"] = f"Levels are {', '.join(RISK_LEVELS)}."
    object_types: tuple[str, ...] = ()
    try:
        object_types = parse_labels(
            "object_type", [one("object_type")] if one("object_type") else []
        )
    except BadParameter:
        errors["object_type"] = "Object types are letters, digits, spaces and _ . -"
    times: dict[str, datetime | None] = {"since": None, "until": None}
    for name in times:
        text = one(name)
        if text:
            try:
                times[name] = parse_local_time(text, zone)
            except ValueError:
                errors[name] = "Not a time: use the date picker or 2026-01-31T18:00."
    since, until = times["since"], times["until"]
    if since is not None and until is not None and until <= since:
        errors["until"] = "Must be later than From."
        until = None
    form = EventForm(
        q=q,
        camera_id=one("camera_id"),
        risk_levels=tuple(v for k, v in items if k == "risk_level" and v),
        object_type=one("object_type"),
        since=one("since"),
        until=one("until"),
        cursor=one("cursor"),
        before="" if one("cursor") else one("before"),
        errors=errors,
    )
    filters = EventFilters(
        camera_id=camera_id,
        risk_levels=levels,
        object_types=object_types,
        since=since,
        until=until,
    )
    return form, filters

"""GET /api/events (filtered, keyset-paged), /api/events/stats, /api/events/{event_id}."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.endpoint import (
    CAMERA_ID,
    CURSOR,
    LABELS,
    LIMIT,
    PAGE_SCHEMA_NOTE,
    SINCE,
    UNTIL,
    UUID,
    Endpoint,
    Param,
    path_param,
)
from hsi.api.params import (
    ZONE_PATTERN,
    Query,
    parse_camera,
    parse_choices,
    parse_int,
    parse_labels,
    parse_ranked_page,
    parse_uuid,
    parse_uuid_page,
    parse_window,
    parse_zones,
)
from hsi.api.queries import events as q
from hsi.api.queries import search
from hsi.api.responses import JSON, BadParameter, NotFound
from hsi.api.routes.listing import page_response
from hsi.api.state import resources


def event_filters(query: Query) -> q.EventFilters:
    """The filters of /api/events from its query string (400 naming the bad parameter)."""
    window = parse_window(query)
    return q.EventFilters(
        camera_id=parse_camera(query),
        risk_levels=parse_choices("risk_level", query.get_list("risk_level"), q.RISK_LEVELS),
        min_score=parse_int("min_score", query.get("min_score"), 0, 100),
        object_types=parse_labels("object_type", query.get_list("object_type")),
        zones=parse_zones("zone", query.get_list("zone")),
        since=window.since,
        until=window.until,
        analysis_statuses=parse_choices(
            "analysis_status", query.get_list("analysis_status"), q.ANALYSIS_STATUSES
        ),
    )


async def events_list(request: Request, query: Query) -> Response:
    """Events, newest first, filtered and keyset-paged; with `q`, the matches best first."""
    filters = event_filters(query)
    text = search.search_text(query.get("q"))
    if text is not None:
        found = search.EventSearch(text, resources(request).config.search_language)
        limit, after = parse_ranked_page(query, found.cursor_kind, "this search (the same q)")
        return await page_response(
            request,
            lambda conn: search.search_events(
                conn, filters, found, limit, after, search.ranked_values
            ),
        )
    limit, after = parse_uuid_page(query, q.CURSOR_KIND)
    engine = resources(request).engine  # one statement: straight on a pooled connection
    return JSON((await q.list_events(engine, filters, limit, after, q.event_values)).body())


async def event_in_path(request: Request) -> dict[str, Any] | None:
    """The event its `event_id` path parameter names (`q.get_event`), or None: not a UUID, or
    no such event."""
    event_id = parse_uuid(request.path_params["event_id"])
    if event_id is None:
        return None
    async with resources(request).engine.connect() as conn:
        return await q.get_event(conn, event_id)


async def event_detail(request: Request, _: Query) -> Response:
    """One event with its files and detections."""
    found = await event_in_path(request)
    if found is None:
        raise NotFound(f"no event {request.path_params['event_id']!r}")
    return JSON(found)


async def events_stats(request: Request, query: Query) -> Response:
    """Event counts by level, analysis status, camera and hour."""
    window = parse_window(query)
    camera_id = parse_camera(query)
    start, end = q.stats_range(window.since, window.until, datetime.now(UTC))
    if end <= start:
        raise BadParameter("since", "must be earlier than until (default: now)")
    if end - start > q.MAX_STATS_RANGE:
        raise BadParameter("since", f"the range may span at most {q.MAX_STATS_RANGE.days} days")
    res = resources(request)
    async with res.engine.connect() as conn:
        body = await q.event_stats(conn, start, end, camera_id, res.config.severity)
    return JSON(body)


_LEVELS = Param(
    "risk_level",
    "Only these risk levels (repeat or comma-separate: `high,critical`).",
    {"type": "array", "items": {"type": "string", "enum": list(q.RISK_LEVELS)}},
    repeatable=True,
)
_STATUS = Param(
    "analysis_status",
    "Only these analysis states (repeatable).",
    {"type": "array", "items": {"type": "string", "enum": list(q.ANALYSIS_STATUSES)}},
    repeatable=True,
)
_MIN_SCORE = Param(
    "min_score", "Risk score at least this.", {"type": "integer", "minimum": 0, "maximum": 100}
)
_OBJECT_TYPE = Param(
    "object_type",
    "Events that saw any of these object types (repeatable), e.g. `person`.",
    LABELS,
    repeatable=True,
)
_ZONE = Param(
    "zone",
    "Events with an object standing in any of these zones (ZONES_PATH; repeatable), e.g. `porch`.",
    {"type": "array", "items": {"type": "string", "pattern": ZONE_PATTERN}},
    repeatable=True,
)
_SEARCH = Param(
    "q",
    'Full-text search (web-search syntax: `person door`, `"front door"`, `car -street`, '
    "`person or dog`) over the summary, reasoning, object types, zones and camera name, in "
    "SEARCH_LANGUAGE. The matches come best first (rank DESC, window_start DESC, id DESC), each "
    "with its `rank`; a cursor serves only the search that made it. At most "
    f"{search.MAX_SEARCH_LENGTH} characters; empty is a 400.",
    {"type": "string", "minLength": 1, "maxLength": search.MAX_SEARCH_LENGTH},
)
_WINDOW_NOTE = " Times filter on the event's window start (when its pictures were taken)."

ENDPOINTS = (
    Endpoint(
        "/api/events",
        events_list,
        "Events, newest first (window_start DESC, id DESC), filtered, keyset-paged; with `q`, "
        "the matching events, best first." + _WINDOW_NOTE,
        "events",
        params=(
            _SEARCH,
            CAMERA_ID,
            _LEVELS,
            _MIN_SCORE,
            _OBJECT_TYPE,
            _ZONE,
            SINCE,
            UNTIL,
            _STATUS,
            LIMIT,
            CURSOR,
        ),
        responses={200: PAGE_SCHEMA_NOTE, 400: "A bad parameter (named in `parameter`)."},
    ),
    Endpoint(
        "/api/events/stats",
        events_stats,
        "Event counts by risk level, analysis status, camera and UTC hour over since/until "
        "(default: the last 24 hours; at most 92 days).",
        "events",
        params=(CAMERA_ID, SINCE, UNTIL),
        responses={200: "Counts.", 400: "A bad parameter."},
    ),
    Endpoint(
        "/api/events/{event_id}",
        event_detail,
        "One event with its files (media links) and detections (thumbnail links).",
        "events",
        params=(path_param("event_id", "The event (batch) id, a UUID.", UUID),),
        responses={200: "The event.", 404: "No such event."},
    ),
)

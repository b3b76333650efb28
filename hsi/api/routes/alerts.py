"""GET /api/alerts: the outcome of every alert delivery, filtered and keyset-paged."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.endpoint import (
    CAMERA_ID,
    CURSOR,
    LIMIT,
    PAGE_SCHEMA_NOTE,
    SINCE,
    UNTIL,
    UUID,
    Endpoint,
    Param,
)
from hsi.api.params import (
    Query,
    parse_camera,
    parse_choices,
    parse_uuid,
    parse_uuid_page,
    parse_window,
)
from hsi.api.queries import alerts as q
from hsi.api.responses import BadParameter
from hsi.api.routes.listing import page_response


def alert_filters(query: Query) -> q.AlertFilters:
    """The filters of /api/alerts from its query string (400 naming the bad parameter)."""
    window = parse_window(query)
    raw_event = query.get("event_id")
    event_id = None if raw_event is None else parse_uuid(raw_event)
    if raw_event is not None and event_id is None:
        raise BadParameter("event_id", f"{raw_event!r} is not an event id (a UUID)")
    return q.AlertFilters(
        camera_id=parse_camera(query),
        channels=parse_choices("channel", query.get_list("channel"), q.CHANNELS),
        statuses=parse_choices("status", query.get_list("status"), q.STATUSES),
        event_id=event_id,
        since=window.since,
        until=window.until,
    )


async def alerts_list(request: Request, query: Query) -> Response:
    """Alert deliveries, newest first, filtered and keyset-paged."""
    filters = alert_filters(query)
    limit, after = parse_uuid_page(query, q.CURSOR_KIND)
    return await page_response(request, lambda conn: q.list_alerts(conn, filters, limit, after))


_CHANNEL = Param(
    "channel",
    "Only these channels (repeat or comma-separate: `webhook,mqtt`).",
    {"type": "array", "items": {"type": "string", "enum": list(q.CHANNELS)}},
    repeatable=True,
)
_STATUS = Param(
    "status",
    "Only these outcomes: `sent`, or `failed` (a failed attempt, or one whose outcome is "
    "unknown: see `reason`).",
    {"type": "array", "items": {"type": "string", "enum": list(q.STATUSES)}},
    repeatable=True,
)
_EVENT_ID = Param("event_id", "Only the alerts of this event (a UUID).", UUID)

ENDPOINTS = (
    Endpoint(
        "/api/alerts",
        alerts_list,
        "Alert deliveries (one per attempt outcome: sent or failed), newest first "
        "(recorded_at DESC, id DESC), keyset-paged. Times filter on when the outcome was "
        "recorded.",
        "alerts",
        params=(CAMERA_ID, _CHANNEL, _STATUS, _EVENT_ID, SINCE, UNTIL, LIMIT, CURSOR),
        responses={200: PAGE_SCHEMA_NOTE, 400: "A bad parameter (named in `parameter`)."},
    ),
)

"""GET /api/live: Server-Sent Events of new batches and analyses (see `hsi.api.live`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.endpoint import Endpoint, Param
from hsi.api.live import LiveFeed, parse_live_id
from hsi.api.params import Query
from hsi.api.responses import BadParameter
from hsi.api.security import API_KEY_QUERY, client_address
from hsi.api.state import resources


async def live_feed(request: Request, query: Query) -> Response:
    """An endless text/event-stream of `batch` and `analysis` events."""
    res = resources(request)
    resume = None
    for name, value in (
        ("last_event_id", query.get("last_event_id")),
        ("Last-Event-ID", request.headers.get("last-event-id")),
    ):
        if value:
            resume = parse_live_id(value)
            if resume is None:
                raise BadParameter(name, "is not an id of this feed (camera|stream|entry id)")
            break
    query.get(API_KEY_QUERY)  # checked by the guard; only once
    return LiveFeed(
        redis=res.config.redis,
        names=res.names,
        config=res.config.live,
        slots=res.live_slots,
        client=client_address(request.scope),
        resume=resume,
    )


ENDPOINTS = (
    Endpoint(
        "/api/live",
        live_feed,
        "Server-Sent Events: `event: batch` (a batch closed) and `event: analysis` (its "
        "analysis), `id: <camera>|<stream>|<entry id>`; resume with the Last-Event-ID header "
        "or `last_event_id`; without one only new entries. A heartbeat comment every "
        "live_heartbeat_seconds; closed after live_idle_timeout_seconds without events. "
        "429 past the per-client connection cap, 503 when the feed is full.",
        "live",
        params=(
            Param("last_event_id", "Resume after this event id (same as Last-Event-ID)."),
            Param("api_key", "The API key, for clients that cannot send X-API-Key."),
            Param(
                "Last-Event-ID",
                "Resume after this event id (sent by browsers on reconnect).",
                location="header",
            ),
        ),
        responses={
            200: "text/event-stream",
            400: "A bad last event id.",
            429: "Too many connections from this client.",
            503: "Too many connections.",
        },
        content_types=("text/event-stream",),
    ),
)

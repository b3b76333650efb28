"""GET /api/streams (stream and group health from Redis), GET /api/dead-letters."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.cursor import decode_cursor
from hsi.api.endpoint import CAMERA_ID, CURSOR, LIMIT, PAGE_SCHEMA_NOTE, Endpoint
from hsi.api.params import Query, parse_camera, parse_limit
from hsi.api.queries import dead_letters as dl
from hsi.api.queries.streams import camera_ids, stream_health, streams_report
from hsi.api.responses import JSON
from hsi.api.routes.listing import page_response
from hsi.api.state import resources


async def streams_status(request: Request, query: Query) -> Response:
    """Per camera and stream: length, last id, groups with lag and pending, dead letters."""
    res = resources(request)
    only = parse_camera(query)
    cameras = await camera_ids(res.redis, res.names)
    if only is not None:
        cameras = [c for c in cameras if c == only]
    health = await stream_health(res.redis, res.names, cameras)
    return JSON(streams_report(health, cameras))


async def dead_letters_list(request: Request, query: Query) -> Response:
    """Projected dead letters, newest first, keyset-paged."""
    camera_id = parse_camera(query)
    limit = parse_limit(query.get("limit"))
    token = query.get("cursor")
    after = None if token is None else decode_cursor(token, dl.CURSOR_KIND, dl.CURSOR_KEY_LENGTH)
    return await page_response(
        request, lambda conn: dl.list_dead_letters(conn, camera_id, limit, after)
    )


ENDPOINTS = (
    Endpoint(
        "/api/streams",
        streams_status,
        "Per camera (from the camera set) and stream: XLEN, first/last id, each consumer group's "
        "lag, pending count and oldest pending entry (id, idle ms), and dead-letter counts.",
        "streams",
        params=(CAMERA_ID,),
        responses={200: '`{"cameras": [...], "totals": {...}}`'},
    ),
    Endpoint(
        "/api/dead-letters",
        dead_letters_list,
        "Dead letters (entries that failed max_deliveries times), newest first, keyset-paged.",
        "streams",
        params=(CAMERA_ID, LIMIT, CURSOR),
        responses={200: PAGE_SCHEMA_NOTE, 400: "A bad parameter (named in `parameter`)."},
    ),
)

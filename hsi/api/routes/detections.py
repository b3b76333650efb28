"""GET /api/detections (filtered, keyset-paged)."""

from __future__ import annotations

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
    Endpoint,
    Param,
)
from hsi.api.params import (
    Query,
    parse_camera_id,
    parse_float,
    parse_labels,
    parse_time_range,
    parse_uuid_page,
)
from hsi.api.queries import detections as q
from hsi.api.responses import JSON
from hsi.api.state import resources


def detection_filters(query: Query) -> q.DetectionFilters:
    window = parse_time_range(query.get("since"), query.get("until"))
    return q.DetectionFilters(
        camera_id=parse_camera_id("camera_id", query.get("camera_id")),
        labels=parse_labels("label", query.get_list("label")),
        min_confidence=parse_float("min_confidence", query.get("min_confidence"), 0.0, 1.0),
        since=window.since,
        until=window.until,
    )


async def detections_list(request: Request, query: Query) -> Response:
    """Detected objects, newest first, filtered and keyset-paged."""
    filters = detection_filters(query)
    limit, after = parse_uuid_page(query, q.CURSOR_KIND)
    async with resources(request).engine.connect() as conn:
        page = await q.list_detections(conn, filters, limit, after)
    return JSON(page.body())


ENDPOINTS = (
    Endpoint(
        "/api/detections",
        detections_list,
        "Detected objects, newest first (captured_at DESC, id DESC), filtered, keyset-paged.",
        "detections",
        params=(
            CAMERA_ID,
            Param(
                "label",
                "Only these labels (repeatable), e.g. `person`.",
                LABELS,
                repeatable=True,
            ),
            Param(
                "min_confidence",
                "Confidence at least this, 0–1.",
                {"type": "number", "minimum": 0, "maximum": 1},
            ),
            SINCE,
            UNTIL,
            LIMIT,
            CURSOR,
        ),
        responses={200: PAGE_SCHEMA_NOTE, 400: "A bad parameter (named in `parameter`)."},
    ),
)

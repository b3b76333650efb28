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
    parse_camera,
    parse_float,
    parse_labels,
    parse_uuid_page,
    parse_window,
)
from hsi.api.queries import detections as q
from hsi.api.routes.listing import page_response


def detection_filters(query: Query) -> q.DetectionFilters:
    window = parse_window(query)
    return q.DetectionFilters(
        camera_id=parse_camera(query),
        labels=parse_labels("label", query.get_list("label")),
        min_confidence=parse_float("min_confidence", query.get("min_confidence"), 0.0, 1.0),
        since=window.since,
        until=window.until,
    )


async def detections_list(request: Request, query: Query) -> Response:
    """Detected objects, newest first, filtered and keyset-paged."""
    filters = detection_filters(query)
    limit, after = parse_uuid_page(query, q.CURSOR_KIND)
    return await page_response(request, lambda conn: q.list_detections(conn, filters, limit, after))


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

"""GET /api/pipeline/latency (percentiles per stage and end to end), GET /asyncapi.json."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.asyncapi import asyncapi_document
from hsi.api.endpoint import CAMERA_ID, Endpoint, Param
from hsi.api.params import Query, parse_camera
from hsi.api.queries.latency import END_TO_END, QUANTILES, STAGES, pipeline_latency
from hsi.api.responses import JSON, BadParameter, iso
from hsi.api.state import resources

DEFAULT_WINDOW_SECONDS = 15 * 60
MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 7 * 24 * 3600

_WINDOW = re.compile(r"(\d{1,7})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

WINDOW = Param(
    "window",
    "How far back: seconds, or a number with s, m, h or d (`900`, `15m`, `2h`); 1m–7d, "
    "default 15m.",
    {"type": "string", "pattern": r"^\d{1,7}[smhd]?$", "default": "15m"},
)


def parse_window(value: str | None) -> int:
    """The window in seconds from `900`, `15m`, `2h`, `1d`."""
    if value is None:
        return DEFAULT_WINDOW_SECONDS
    match = _WINDOW.fullmatch(value.strip().lower())
    if match is None:
        raise BadParameter("window", f"{value!r} is not a duration; use e.g. 900, 15m, 2h or 1d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise BadParameter("window", f"{value!r} is outside 1m–7d")
    return seconds


async def pipeline_latency_report(request: Request, query: Query) -> Response:
    """Latency percentiles per stage and end to end, from the projected tables."""
    res = resources(request)
    window = parse_window(query.get("window"))
    camera_id = parse_camera(query)
    until = datetime.now(UTC)
    since = until - timedelta(seconds=window)
    async with res.engine.connect() as conn:
        found = await pipeline_latency(conn, res.names, since, camera_id)
    return JSON(
        {
            "window_seconds": window,
            "since": iso(since),
            "until": iso(until),
            "camera_id": camera_id,
            "source": "projection",
            "quantiles": list(QUANTILES),
            "stages": {stage: found[stage].body() for stage in STAGES},
            "end_to_end": found[END_TO_END].body(),
        }
    )


async def asyncapi(request: Request, _: Query) -> Response:
    """The AsyncAPI 3.0 description of HSI's streams and consumer groups."""
    return JSON(asyncapi_document(resources(request).names.prefix))


ENDPOINTS = (
    Endpoint(
        "/api/pipeline/latency",
        pipeline_latency_report,
        "p50/p95/p99 in seconds over a recent window, per stage (`detect`: observed → detected; "
        "`batch`: last file detected → batch closed; `analyze`: closed → analyzed; `project`: "
        "analyzed → projected) and `end_to_end` (first file observed → event projected), with "
        "the sample count. Computed from the projected tables, so it covers every process; "
        "stages without samples have null percentiles.",
        "pipeline",
        params=(WINDOW, CAMERA_ID),
        responses={
            200: '`{"window_seconds", "since", "until", "camera_id", "source", "quantiles", '
            '"stages": {stage: {"count", "p50", "p95", "p99"}}, "end_to_end": {...}}`',
            400: "A bad parameter (named in `parameter`).",
        },
    ),
    Endpoint(
        "/asyncapi.json",
        asyncapi,
        "The AsyncAPI 3.0 description of the streams: who writes each, which consumer groups "
        "read it, the entry schemas and headers.",
        "system",
        responses={200: "AsyncAPI 3.0 document."},
        uses_stores=False,
    ),
)

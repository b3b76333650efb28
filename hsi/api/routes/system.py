"""GET /health (liveness), /ready (readiness with numbers), /metrics, /openapi.json."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hsi import __version__
from hsi.api.endpoint import Endpoint
from hsi.api.params import Query
from hsi.api.queries.streams import camera_ids, projector_lag, stream_health
from hsi.api.responses import JSON
from hsi.api.security import authorized
from hsi.api.state import resources
from hsi.infra.db import pending_migrations
from hsi.infra.redis import check_server
from hsi.infra.telemetry import render_metrics
from streams.names import PROJECTED


async def health(_: Request, __: Query) -> Response:
    """Liveness: the process answers."""
    return JSON({"status": "ok", "version": __version__})


async def ready(request: Request, _: Query) -> Response:
    """Readiness: Redis and PostgreSQL answer, migrations are current, the projector keeps up.

    Without the API key (when keys are on) only the status: the checks say more than a probe
    needs."""
    res = resources(request)
    checks: dict[str, dict[str, Any]] = {}
    try:
        checks["redis"] = {"ok": True, "version": (await check_server(res.redis)).version}
    except Exception as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
    try:
        pending = await pending_migrations(res.engine)
        checks["postgres"] = {"ok": True}
        checks["migrations"] = {"ok": not pending, "pending": pending}
    except Exception as exc:
        checks["postgres"] = {"ok": False, "error": type(exc).__name__}
    if checks["redis"]["ok"]:
        try:
            cameras = await camera_ids(res.redis, res.names)
            lag = projector_lag(await stream_health(res.redis, res.names, cameras, PROJECTED))
            limit = res.config.ready_max_projector_lag
            checks["projector"] = {
                "ok": lag.behind <= limit,
                "lag": lag.lag,
                "pending": lag.pending,
                "behind": lag.behind,
                "max_behind": limit,
                "streams": lag.streams,
                "streams_lag_unknown": lag.unknown,
                "cameras": len(cameras),
            }
        except Exception as exc:
            checks["projector"] = {"ok": False, "error": type(exc).__name__}
    ok = all(check["ok"] for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not_ready"}
    if authorized(request.scope):  # the numbers name cameras' count, lag and versions
        body["checks"] = checks
    return JSON(body, status_code=200 if ok else 503)


async def metrics(_: Request, __: Query) -> Response:
    """Prometheus exposition of this process's instruments."""
    body, content_type = await asyncio.to_thread(render_metrics)
    return Response(body, media_type=content_type)


async def openapi(request: Request, _: Query) -> Response:
    """The OpenAPI 3.1 description of every route."""
    return JSON(resources(request).openapi)


ENDPOINTS = (
    Endpoint(
        "/health",
        health,
        "Liveness: the process answers.",
        "system",
        responses={200: "ok"},
        authenticated=False,
        rate_limited=False,
        uses_stores=False,
    ),
    Endpoint(
        "/ready",
        ready,
        "Readiness: Redis, PostgreSQL, migrations current, projector behind (lag + pending of "
        "group `project` over the camera streams) at most the configured maximum.",
        "system",
        responses={
            200: "Ready; with the API key (or keys off) also the checks and their numbers.",
            503: "Not ready; with the API key (or keys off) also the checks and their numbers.",
        },
        authenticated=False,
        answers=frozenset({503}),
    ),
    Endpoint(
        "/metrics",
        metrics,
        "Prometheus metrics.",
        "system",
        responses={200: "Prometheus text exposition."},
        content_types=("text/plain",),
        uses_stores=False,
    ),
    Endpoint(
        "/openapi.json",
        openapi,
        "This description.",
        "system",
        responses={200: "OpenAPI 3.1 document."},
        uses_stores=False,
    ),
)

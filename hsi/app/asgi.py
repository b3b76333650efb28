"""The Starlette application of the read-only query API.

`create_app(config)` wires the endpoint table of `hsi.api.routes` into routes, the middleware
(`Tracing`, `RequestIds`, the trusted proxies' X-Forwarded-* (`ProxyHeaders`), CORS when origins
are configured, then the API-key and rate-limit `Guard`) and the JSON error handlers. The
lifespan makes the resources (engine, Redis pool, live connection slots) and closes them;
requests reach them through `hsi.api.state.resources()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hsi.api.config import APIConfig, LiveConfig, RateLimits
from hsi.api.openapi import build_openapi
from hsi.api.request_ids import ProxyHeaders, RequestIds
from hsi.api.responses import (
    REDIS_ERRORS,
    APIError,
    api_error_handler,
    http_error_handler,
    unavailable,
)
from hsi.api.routes import ENDPOINTS
from hsi.api.security import ConnectionSlots, Guard
from hsi.api.state import Resources
from hsi.infra.db import PoolConfig, create_engine
from hsi.infra.redis import create_redis
from hsi.infra.telemetry import get_tracer
from hsi.web import WebConfig, web_routes
from streams.names import StreamNames

__all__ = ["ENDPOINTS", "APIConfig", "LiveConfig", "RateLimits", "create_app"]

# Probes and scrapes come every few seconds and would bury the requests worth a trace.
UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})
_PROPAGATOR = TraceContextTextMapPropagator()
# At most 30 PostgreSQL connections (the engine's default 10 + 20 overflow), every one kept once
# opened: an overflow connection is closed when it is returned, so under more than 10
# concurrent requests most of them would open a connection (a server process) of their own.
# A connection is pinged only after 30 s idle or when its server spoke (`hsi.infra.db`), not on
# every checkout: a round trip per request otherwise.
API_POOL = PoolConfig(size=30, max_overflow=0, check_idle_seconds=30.0)
# The sessions' TimeZone: psycopg then hands back every time already in UTC, as the JSON writes it.
API_TIMEZONE = "UTC"


class Tracing:
    """One server span per HTTP request (`GET /api/events/{event_id}`), continuing the caller's
    W3C `traceparent`, with method, route, path and status. Pure ASGI, so a streamed response
    (the live feed) is traced until it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        with get_tracer().start_as_current_span(
            method,
            context=_PROPAGATOR.extract(carrier) if carrier else Context(),  # what it gives
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")


async def _database_unavailable(_: Request, exc: Exception) -> Response:
    return unavailable("PostgreSQL", "DATABASE_URL", exc)


async def _redis_unavailable(_: Request, exc: Exception) -> Response:
    return unavailable("Redis", "REDIS_URL", exc)


def create_app(config: APIConfig, web: WebConfig | None = None) -> Starlette:
    openapi = build_openapi(
        ENDPOINTS, keys_enabled=config.api_key_enabled, rate_limited=config.rate_limits.enabled
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(
            config.database_url,
            API_POOL,
            schema=config.database_schema,
            autocommit=True,
            timezone=API_TIMEZONE,
        )
        redis = create_redis(config.redis)
        try:
            yield {
                "resources": Resources(
                    config=config,
                    engine=engine,
                    redis=redis,
                    names=StreamNames(config.stream_prefix),
                    live_slots=ConnectionSlots(
                        config.rate_limits.live_max_connections,
                        config.rate_limits.live_connections_per_client,
                    ),
                    openapi=openapi,
                    thumbnail_slots=asyncio.Semaphore(config.thumbnail_concurrency),
                )
            }
        finally:
            await redis.aclose()
            await engine.dispose()

    middleware = [
        Middleware(Tracing),
        Middleware(RequestIds, trusted=config.forwarded_allow_ips),
        Middleware(ProxyHeaders, trusted_hosts=list(config.forwarded_allow_ips)),
    ]
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_credentials=config.cors_allow_credentials,
                allow_methods=["GET", "HEAD"],
                allow_headers=[
                    "X-API-Key",
                    "Last-Event-ID",
                    "If-None-Match",
                    "Range",
                    "X-Request-ID",
                ],
                expose_headers=["ETag", "Retry-After", "Content-Range", "X-Request-ID"],
            )
        )
    middleware.append(
        Middleware(
            Guard,
            keys=config.api_keys,
            keys_enabled=config.api_key_enabled,
            metrics_open=config.metrics_open,
            limits=config.rate_limits,
        )
    )
    app = Starlette(
        routes=[*(endpoint.route() for endpoint in ENDPOINTS), *web_routes(config, web)],
        middleware=middleware,
        exception_handlers={
            APIError: api_error_handler,
            HTTPException: http_error_handler,
            DBAPIError: _database_unavailable,
            **dict.fromkeys(REDIS_ERRORS, _redis_unavailable),
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # an unknown path is a JSON 404, never a redirect
    return app

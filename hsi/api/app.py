"""The Starlette application of the read-only query API.

`create_app(config)` wires the endpoint table of `hsi.api.routes` into routes, the middleware
(CORS when origins are configured, then the API-key and rate-limit `Guard`) and the JSON error
handlers. The lifespan makes the resources (engine, Redis pool, live connection slots) and
closes them; requests reach them through `hsi.api.state.resources()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from hsi.api.config import APIConfig, LiveConfig, RateLimits
from hsi.api.endpoint import Endpoint
from hsi.api.openapi import build_openapi
from hsi.api.responses import APIError, api_error_handler, error_response, http_error_handler
from hsi.api.routes import cameras, detections, events, live, media, streams, system
from hsi.api.security import ConnectionSlots, Guard
from hsi.api.state import Resources
from hsi.db import create_engine
from hsi.redis import create_redis
from streams.names import StreamNames

__all__ = ["ENDPOINTS", "APIConfig", "LiveConfig", "RateLimits", "create_app"]

ENDPOINTS: tuple[Endpoint, ...] = (
    *system.ENDPOINTS,
    *cameras.ENDPOINTS,
    *events.ENDPOINTS,
    *detections.ENDPOINTS,
    *media.ENDPOINTS,
    *streams.ENDPOINTS,
    *live.ENDPOINTS,
)


async def _database_unavailable(_: Request, exc: Exception) -> Response:
    return error_response(
        503,
        f"PostgreSQL is unavailable ({type(exc).__name__}); retry shortly, and check the "
        "database server and DATABASE_URL if it persists",
        headers={"Retry-After": "5"},
    )


async def _redis_unavailable(_: Request, exc: Exception) -> Response:
    return error_response(
        503,
        f"Redis is unavailable ({type(exc).__name__}); retry shortly, and check the Redis "
        "server and REDIS_URL if it persists",
        headers={"Retry-After": "5"},
    )


def create_app(config: APIConfig) -> Starlette:
    openapi = build_openapi(
        ENDPOINTS, keys_enabled=config.api_key_enabled, rate_limited=config.rate_limits.enabled
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(config.database_url, schema=config.database_schema)
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
                )
            }
        finally:
            await redis.aclose()
            await engine.dispose()

    middleware = []
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_credentials=config.cors_allow_credentials,
                allow_methods=["GET", "HEAD"],
                allow_headers=["X-API-Key", "Last-Event-ID", "If-None-Match", "Range"],
                expose_headers=["ETag", "Retry-After", "Content-Range"],
            )
        )
    middleware.append(
        Middleware(
            Guard,
            keys=config.api_keys,
            keys_enabled=config.api_key_enabled,
            limits=config.rate_limits,
        )
    )
    app = Starlette(
        routes=[endpoint.route() for endpoint in ENDPOINTS],
        middleware=middleware,
        exception_handlers={
            APIError: api_error_handler,
            HTTPException: http_error_handler,
            DBAPIError: _database_unavailable,
            RedisError: _redis_unavailable,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # an unknown path is a JSON 404, never a redirect
    return app

"""The Starlette application: health, readiness and metrics for now; queries come with the
projections. Resources (engine, Redis client) are made by the lifespan and closed by it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hsi import __version__
from hsi.db import create_engine, pending_migrations
from hsi.redis import RedisConfig, check_server, create_redis
from hsi.telemetry import render_metrics

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class APIConfig:
    database_url: str
    redis: RedisConfig


async def health(_: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    """Readiness: Redis answers, PostgreSQL answers and has every migration."""
    checks: dict[str, Any] = {}
    engine: AsyncEngine = request.state.engine
    redis: Redis = request.state.redis
    try:
        checks["redis"] = {"ok": True, "version": (await check_server(redis)).version}
    except Exception as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
    try:
        pending = await pending_migrations(engine)
        checks["postgres"] = {"ok": not pending, "pending_migrations": pending}
    except Exception as exc:
        checks["postgres"] = {"ok": False, "error": type(exc).__name__}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )


async def metrics(_: Request) -> Response:
    """Prometheus exposition of this process's instruments."""
    body, content_type = await asyncio.to_thread(render_metrics)
    return Response(body, media_type=content_type)


def create_app(config: APIConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(config.database_url)
        redis = create_redis(config.redis)
        try:
            yield {"engine": engine, "redis": redis}
        finally:
            await redis.aclose()
            await engine.dispose()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)

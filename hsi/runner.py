"""`hsi up`: everything in one process for a single home.

Starts (or reuses) the embedded servers where no URL is configured, applies migrations, sets up
logging and telemetry, and serves the API with uvicorn (HTTPS when TLS is configured).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import uvicorn

from hsi.api.app import APIConfig, create_app
from hsi.db import DatabaseError, create_engine, migrate
from hsi.embedded import EmbeddedServerError
from hsi.logging import LoggingConfig, log_event, setup_logging
from hsi.redis import RedisConfig, RedisUnavailableError, check_server, create_redis
from hsi.services import ensure_services
from hsi.telemetry import TelemetryConfig, setup_telemetry
from hsi.tls import TLSConfig, TLSError, uvicorn_ssl_options

if TYPE_CHECKING:
    from hsi.config import Settings

STARTUP_ERRORS: tuple[type[Exception], ...] = (
    DatabaseError,
    EmbeddedServerError,
    RedisUnavailableError,
    TLSError,
)

log = logging.getLogger("hsi.up")


async def _prepare(database_url: str, redis: RedisConfig) -> list[str]:
    client = create_redis(redis)
    try:
        await check_server(client)
    finally:
        await client.aclose()
    engine = create_engine(database_url)
    try:
        return await migrate(engine)
    finally:
        await engine.dispose()


def run_up(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    urls = ensure_services(settings)
    setup_logging(LoggingConfig.from_settings(settings, db_url=urls.database_url))
    setup_telemetry(TelemetryConfig.from_settings(settings))
    redis_config = RedisConfig.from_settings(settings, urls.redis_url)
    applied = asyncio.run(_prepare(urls.database_url, redis_config))
    settings.camera_root.mkdir(parents=True, exist_ok=True)
    log_event(
        log,
        "hsi.starting",
        embedded=",".join(urls.embedded) or "none",
        migrations_applied=len(applied),
        camera_root=str(settings.camera_root),
    )
    app = create_app(APIConfig(database_url=urls.database_url, redis=redis_config))
    tls = TLSConfig.from_settings(settings)
    ssl_options = uvicorn_ssl_options(tls)
    scheme = "https" if ssl_options else "http"
    bind_host = host or settings.api_host
    bind_port = settings.api_port if port is None else port
    log_event(log, "api.listening", url=f"{scheme}://{bind_host}:{bind_port}")
    uvicorn.run(app, host=bind_host, port=bind_port, log_config=None, **ssl_options)

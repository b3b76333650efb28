"""Fixtures for the dashboard: the API app with the dashboard's routes mounted the way
`create_app` is to mount them, a migrated schema, a camera root, and clients over the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from hsi.app.asgi import APIConfig, create_app
from hsi.infra.db import migrate
from hsi.web import WebConfig
from streams.names import StreamNames
from tests.api.conftest import with_lifespan_state
from tests.conftest import MakeConfig
from tests.web.home import Home, build_home


def web_app(config: APIConfig, web: WebConfig | None = None) -> Starlette:
    """The app with the dashboard mounted, as `hsi up` builds it."""
    return create_app(config, web)


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    """The test's schema with every migration applied."""
    await migrate(db_engine)
    return db_engine


@pytest.fixture
def camera_root(tmp_path: Path) -> Path:
    root = tmp_path / "cameras"
    root.mkdir()
    return root


@asynccontextmanager
async def serve(
    config: APIConfig, web: WebConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the app and dashboard with the lifespan running."""
    app = web_app(config, web)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(with_lifespan_state(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="http://hsi.test") as client:
            yield client


@pytest.fixture
async def client(engine: AsyncEngine, make_config: MakeConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_config()) as http:
        yield http


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
async def home(
    engine: AsyncEngine, camera_root: Path, redis_client: Redis, names: StreamNames
) -> Home:
    """Two cameras with pictures, three events, a dead letter and a stream (`tests.web.home`)."""
    return await build_home(engine, camera_root, redis_client, names)

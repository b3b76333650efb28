"""Fixtures for the query API: a migrated schema, a camera root, and clients over the app.

`serve()` runs the app's lifespan itself and hands its state to every request the way a server
does, so httpx's ASGITransport (which runs no lifespan) sees the same app as uvicorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from hsi.app.asgi import APIConfig, create_app
from hsi.infra.db import migrate
from streams.names import StreamNames
from tests.conftest import MakeConfig


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


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


def with_lifespan_state(app: Starlette, state: dict[str, Any]) -> Any:
    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return asgi


@asynccontextmanager
async def serve(config: APIConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the app with its lifespan running."""
    app = create_app(config)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(with_lifespan_state(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="http://hsi.test") as client:
            yield client


@pytest.fixture
async def client(engine: AsyncEngine, make_config: MakeConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the app with the default test configuration."""
    async with serve(make_config()) as http:
        yield http

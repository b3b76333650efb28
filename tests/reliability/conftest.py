"""Fixtures of the reliability suites: a PostgreSQL database of the test's own (the workers are
separate processes that take a DATABASE_URL, not a schema) and the fake RT-DETR service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hsi.infra.db import create_engine
from tests.fakes.rtdetr import FakeRtDetr, serve_fake_rtdetr
from tests.reliability.fleet import CAR


@pytest.fixture
async def own_database(database_url: str) -> AsyncIterator[str]:
    """The URL of a fresh database on the session's server, dropped afterwards."""
    name = f"hsi_rel_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture
async def own_engine(own_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database)
    yield engine
    await engine.dispose()


@pytest.fixture
def rtdetr() -> Iterator[tuple[FakeRtDetr, str]]:
    """The fake RT-DETR service answering one car (no fast path: batches close full or idle)."""
    with serve_fake_rtdetr() as (fake, url):
        fake.answer_normally([CAR])
        yield fake, url

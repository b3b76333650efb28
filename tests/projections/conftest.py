"""Fixtures of the read-side tests: a migrated schema, a second one, the stream names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import create_engine, migrate
from streams.names import StreamNames


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    """The test's own schema, migrated."""
    await migrate(db_engine)
    return db_engine


@pytest.fixture
async def other_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A second migrated schema of the test's own, for a projection to compare with."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(database_url, schema=schema)
    await migrate(engine)
    yield engine
    await engine.dispose()
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()

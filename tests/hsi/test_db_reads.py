"""The query API's read path (`fetch_rows`) and the pool's idle check, against a real PostgreSQL:
rows on a pooled connection's psycopg connection, errors as SQLAlchemy's, and connections the
server ended replaced, not handed out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import PoolConfig, create_engine, fetch_rows, needs_ping, server_spoke
from hsi.logs.setup import libpq_conninfo
from tests.waiting import wait_until

ONE_CONNECTION = PoolConfig(size=1, max_overflow=0, check_idle_seconds=30.0)


@pytest.fixture
async def reader(database_url: str, db_schema: str) -> AsyncIterator[AsyncEngine]:
    """The API's kind of engine with a pool of one, so every read reuses the same connection."""
    engine = create_engine(
        database_url, ONE_CONNECTION, schema=db_schema, autocommit=True, timezone="UTC"
    )
    yield engine
    await engine.dispose()


async def _backend(engine: AsyncEngine) -> int:
    rows = await fetch_rows(engine, "SELECT pg_backend_pid()", {})
    return int(rows[0][0])


async def _terminate(database_url: str, pid: int) -> None:
    """End a backend and wait until it is gone."""
    admin = create_engine(database_url)
    try:
        async with admin.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid, 60000)"), {"pid": pid})
    finally:
        await admin.dispose()


async def test_rows_come_from_the_pooled_connection(reader: AsyncEngine) -> None:
    """Parameters bound by psycopg, rows as tuples, times in UTC; the connection is reused."""
    rows = await fetch_rows(reader, "SELECT %(n)s::int + 1, now()", {"n": 2})
    assert len(rows) == 1
    assert rows[0][0] == 3
    assert rows[0][1].tzinfo is UTC
    assert await _backend(reader) == await _backend(reader)


async def test_a_connection_gives_the_same_rows(reader: AsyncEngine) -> None:
    """Given a connection instead of the engine, the statement runs through it."""
    async with reader.connect() as conn:
        rows = await fetch_rows(conn, "SELECT %(n)s::int + 1", {"n": 2})
    assert [tuple(row) for row in rows] == [(3,)]


async def test_errors_are_sqlalchemys_and_keep_the_connection(reader: AsyncEngine) -> None:
    """A failing statement raises the DBAPIError SQLAlchemy would; the connection is fine and
    goes back to the pool."""
    before = await _backend(reader)
    with pytest.raises(ProgrammingError) as caught:
        await fetch_rows(reader, "SELECT * FROM no_such_table", {})
    assert isinstance(caught.value.orig, psycopg.errors.UndefinedTable)
    assert caught.value.connection_invalidated is False
    assert caught.value.statement == "SELECT * FROM no_such_table"
    assert await _backend(reader) == before


async def test_a_connection_ended_while_idle_is_replaced(
    reader: AsyncEngine, database_url: str
) -> None:
    """The server ends a pooled connection (a restart would): the next read gets a new one
    instead of an error."""
    before = await _backend(reader)
    await _terminate(database_url, before)
    after = await _backend(reader)
    assert after != before


async def test_a_connection_ended_mid_statement_is_invalidated(
    reader: AsyncEngine, database_url: str
) -> None:
    """A connection that dies under a statement raises OperationalError marked invalidated, and
    is not handed out again."""
    before = await _backend(reader)
    sleeping = asyncio.create_task(fetch_rows(reader, "SELECT pg_sleep(60)", {}))
    admin = create_engine(database_url)
    try:

        async def running() -> bool:
            async with admin.connect() as conn:
                state = await conn.scalar(
                    text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": before}
                )
            return bool(state == "active")

        await wait_until(running, "the statement to run")
    finally:
        await admin.dispose()
    await _terminate(database_url, before)
    with pytest.raises(OperationalError) as caught:
        await sleeping
    assert caught.value.connection_invalidated is True
    assert await _backend(reader) != before


async def test_an_unreachable_server_is_a_dbapi_error() -> None:
    """No server: the checkout fails as SQLAlchemy's OperationalError (the API's 503)."""
    engine = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/hsi", ONE_CONNECTION, autocommit=True
    )
    try:
        with pytest.raises(DBAPIError) as caught:
            await fetch_rows(engine, "SELECT 1", {})
        assert isinstance(caught.value, OperationalError)
    finally:
        await engine.dispose()


async def test_server_spoke_tells_an_ended_connection(database_url: str) -> None:
    """An idle connection's socket is quiet until the server ends the connection."""
    conn = await psycopg.AsyncConnection.connect(libpq_conninfo(database_url), autocommit=True)
    try:
        assert server_spoke(conn) is False
        await _terminate(database_url, conn.info.backend_pid)
        assert server_spoke(conn) is True
    finally:
        await conn.close()
    assert server_spoke(object()) is True  # nothing to ask: checked by a ping


@pytest.mark.parametrize(
    ("returned_at", "now", "spoke", "expected"),
    [
        (None, 100.0, True, False),  # new: just connected
        (90.0, 100.0, False, False),  # used 10 s ago, quiet
        (90.0, 100.0, True, True),  # the server spoke
        (60.0, 100.0, False, True),  # idle past 30 s
    ],
)
def test_needs_ping(returned_at: float | None, now: float, spoke: bool, expected: bool) -> None:
    assert needs_ping(returned_at, now, 30.0, spoke) is expected

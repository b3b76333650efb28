"""Migration runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import (
    DatabaseError,
    MigrationError,
    create_engine,
    load_migrations,
    migrate,
    pending_migrations,
)


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
        return {r[0] for r in rows}


async def test_project_migrations_apply_once(db_engine: AsyncEngine) -> None:
    """The shipped migrations apply, and a second run applies nothing."""
    first = await migrate(db_engine)
    assert first == [m.name for m in load_migrations()]
    assert await migrate(db_engine) == []
    assert await pending_migrations(db_engine) == []
    assert {"schema_migrations", "logs"} <= await _tables(db_engine)


async def test_concurrent_runners_are_serialized(
    database_url: str, db_schema: str, tmp_path: Path
) -> None:
    """Two runners at once: the advisory lock makes one apply and the other find nothing to do."""
    _write(tmp_path, "0001_a.sql", "CREATE TABLE a (id int); SELECT pg_sleep(0.3);")
    _write(tmp_path, "0002_b.sql", "CREATE TABLE b (id int);")
    engines = [create_engine(database_url, schema=db_schema) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate(e, tmp_path) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(results, key=len) == [[], ["0001_a.sql", "0002_b.sql"]]


async def test_failing_migration_rolls_back_and_names_file(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    """A broken file leaves nothing of itself behind and the error names it."""
    _write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (id int);")
    _write(tmp_path, "0002_broken.sql", "CREATE TABLE half (id int); CREATE TABLE oops (;")
    with pytest.raises(MigrationError, match=r"0002_broken\.sql") as caught:
        await migrate(db_engine, tmp_path)
    assert caught.value.name == "0002_broken.sql"
    tables = await _tables(db_engine)
    assert "ok" in tables
    assert "half" not in tables
    assert await pending_migrations(db_engine, tmp_path) == ["0002_broken.sql"]


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    """A file that does not follow NNNN_name.sql is an error, not silently skipped."""
    _write(tmp_path, "1_first.sql", "SELECT 1;")
    with pytest.raises(DatabaseError, match=r"NNNN_lowercase_words\.sql"):
        load_migrations(tmp_path)


async def test_unreachable_database_gives_clear_error(tmp_path: Path) -> None:
    """A closed port gives a DatabaseError that says what to check."""
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/hsi")
    try:
        with pytest.raises(DatabaseError, match="DATABASE_URL"):
            await migrate(engine)
    finally:
        await engine.dispose()


async def test_a_search_path_in_the_url_is_kept_beside_the_sessions_time_zone(
    database_url: str, db_schema: str
) -> None:
    """`options` in the URL (how `hsi up` is pointed at a schema) and the engine's own session
    settings both apply: the engine's do not replace the URL's."""
    engine = create_engine(
        f"{database_url}?options=-csearch_path%3D{db_schema}", timezone="Pacific/Auckland"
    )
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW search_path"))).scalar() == db_schema
            assert (await conn.execute(text("SHOW TimeZone"))).scalar() == "Pacific/Auckland"
    finally:
        await engine.dispose()

"""Running the project stage to the end of streams, and reading the tables back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.projector import ProjectionResult, Projector, ProjectStage
from projections.shadow import compared_columns
from projections.tables import TABLES, qualified
from streams.contract import StreamEntry
from streams.groups import ensure_group
from streams.names import Group, StreamNames

Tables = dict[str, list[tuple[Any, ...]]]


def stage_for(redis: Redis, names: StreamNames, engine: AsyncEngine) -> ProjectStage:
    return ProjectStage(redis, names, Projector(engine, names))


async def project_all(
    redis: Redis,
    stage: ProjectStage,
    streams: Iterable[str],
    *,
    count: int = 100,
    consumer: str = "test-projector",
) -> list[ProjectionResult]:
    """Drain mode: read the streams in group `project` (as the stage runner does) and hand
    every batch to the stage until nothing new is left."""
    keys = list(streams)
    for stream in keys:
        await ensure_group(redis, stream, Group.PROJECT.value)
    results: list[ProjectionResult] = []
    while True:
        reply: Any = await redis.xreadgroup(
            Group.PROJECT.value, consumer, dict.fromkeys(keys, ">"), count=count
        )
        if not reply:
            return results
        for raw_stream, rows in reply:
            stream = raw_stream.decode()
            batch: list[StreamEntry] = [(i.decode(), f) for i, f in rows]
            results.append(await stage.handle(stream, batch))


async def read_stream(redis: Redis, stream: str) -> list[StreamEntry]:
    rows: Any = await redis.xrange(stream)
    return [(i.decode(), f) for i, f in rows]


async def apply_streams(
    projector: Projector, redis: Redis, streams: Iterable[str], page: int = 1000
) -> list[tuple[str, ProjectionResult]]:
    """Apply every entry of the streams directly (no consumer group), `page` per call."""
    results = []
    for stream in streams:
        entries = await read_stream(redis, stream)
        for start in range(0, len(entries), page):
            result = await projector.apply(stream, entries[start : start + page])
            results.append((stream, result))
    return results


async def dump(engine: AsyncEngine, schema: str | None = None) -> Tables:
    """Every projection table's rows (checkpoint times left out), sorted."""
    tables: Tables = {}
    async with engine.connect() as conn:
        for table in TABLES:
            columns = compared_columns(table)
            order = ", ".join(str(i + 1) for i in range(len(columns)))
            rows = await conn.execute(
                text(
                    f"SELECT {', '.join(columns)} FROM {qualified(table.name, schema)} "  # noqa: S608
                    f"ORDER BY {order}"
                )
            )
            tables[table.name] = [tuple(row) for row in rows]
    return tables


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)

"""The files the projection knows, for giving the watcher's dedupe markers back to Redis.

`media_files` holds, per camera, the content hash, the `file.observed` entry id and the time the
file was observed. `known_files` streams those observed since a moment (server-side cursor, in
pages), as plain tuples: the write side turns them into markers (`streams.watch.markers`),
the application shell joins the two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.tables import media_files

PAGE = 5_000  # rows fetched per round trip

# (camera id, sha256, file entry id, observed at)
KnownRow = tuple[str, str, str, datetime]


async def known_files(
    engine: AsyncEngine, observed_since: datetime, page: int = PAGE
) -> AsyncIterator[KnownRow]:
    """Each (camera, sha256) observed at or after `observed_since`, once, with its first entry
    id and observed time (a hash published twice before keeps its first entry)."""
    first = func.min(media_files.c.observed_at)
    query = (
        select(
            media_files.c.camera_id,
            media_files.c.sha256,
            func.min(media_files.c.entry_id),
            first,
        )
        .where(media_files.c.sha256.is_not(None), media_files.c.observed_at >= observed_since)
        .group_by(media_files.c.camera_id, media_files.c.sha256)
    )
    async with engine.connect() as conn:
        rows = await conn.stream(query.execution_options(yield_per=page))
        async for camera, sha256, entry_id, observed_at in rows:
            yield camera, sha256, entry_id, observed_at


async def has_files(engine: AsyncEngine) -> bool:
    """Whether the projection knows any file at all."""
    async with engine.connect() as conn:
        found = await conn.scalar(select(media_files.c.id).limit(1))
    return found is not None

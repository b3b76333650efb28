"""The dedupe markers come back from PostgreSQL once per Redis data set: on a fresh Redis, after
a loss, not again while the data set keeps them."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.markers import restore_lost_markers
from hsi.infra.db import migrate
from projections.tables import media_files
from streams.names import StreamNames

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = 30 * 86_400


def _sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def _row(camera: str, entry_id: str, sha256: str, observed_at: datetime) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "camera_id": camera,
        "entry_id": entry_id,
        "sha256": sha256,
        "observed_at": observed_at,
    }


async def _lose_everything(redis: Redis, prefix: str) -> None:
    """What a restart without persistence does to this installation's keys."""
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis.delete(*keys)


async def test_markers_are_restored_once_per_redis_data_set(
    redis_client: Redis, key_prefix: str, db_engine: AsyncEngine
) -> None:
    """A fresh Redis with files in PostgreSQL gets their markers (the first entry of a hash
    published twice, none for files older than the TTL); a second call does nothing; after a
    loss they come back again."""
    await migrate(db_engine)
    names = StreamNames(key_prefix)
    async with db_engine.begin() as conn:
        await conn.execute(
            insert(media_files),
            [
                _row("front", "2-0", _sha(1), NOW - timedelta(days=1)),
                _row("front", "1-0", _sha(1), NOW - timedelta(days=2)),  # its first publication
                _row("back", "3-0", _sha(2), NOW - timedelta(hours=1)),
                _row("back", "4-0", _sha(3), NOW - timedelta(days=40)),  # past the TTL
            ],
        )
    first = await restore_lost_markers(redis_client, names, db_engine, ttl_seconds=TTL, now=NOW)
    assert first is not None
    assert (first.written, first.present) == (2, 0)
    assert await redis_client.get(names.seen("front", _sha(1))) == b"1-0"
    assert await redis_client.get(names.seen("back", _sha(2))) == b"3-0"
    assert not await redis_client.exists(names.seen("back", _sha(3)))
    assert await redis_client.ttl(names.seen("front", _sha(1))) >= TTL - 2 * 86_400 - 5

    # The same data set: nothing to do, even after a marker expired or was removed.
    await redis_client.delete(names.seen("back", _sha(2)))
    assert await restore_lost_markers(redis_client, names, db_engine, ttl_seconds=TTL) is None
    assert not await redis_client.exists(names.seen("back", _sha(2)))

    await _lose_everything(redis_client, key_prefix)
    again = await restore_lost_markers(redis_client, names, db_engine, ttl_seconds=TTL, now=NOW)
    assert again is not None
    assert again.written == 2
    assert await redis_client.get(names.seen("back", _sha(2))) == b"3-0"


async def test_a_new_installation_has_nothing_to_restore(
    redis_client: Redis, key_prefix: str, db_engine: AsyncEngine
) -> None:
    """No file in PostgreSQL: nothing is written but the note that the data set is checked."""
    await migrate(db_engine)
    names = StreamNames(key_prefix)
    assert await restore_lost_markers(redis_client, names, db_engine, ttl_seconds=TTL) is None
    assert await redis_client.get(names.markers_restored) == await redis_client.get(names.epoch)


async def test_a_hundred_thousand_files_are_restored_in_seconds(
    redis_client: Redis, key_prefix: str, db_engine: AsyncEngine
) -> None:
    """One camera's 100 000 files: streamed from PostgreSQL and pipelined into Redis."""
    await migrate(db_engine)
    names = StreamNames(key_prefix)
    rows = [_row("front", f"{n}-0", _sha(n), NOW - timedelta(seconds=n)) for n in range(100_000)]
    async with db_engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            await conn.execute(insert(media_files), rows[start : start + 10_000])
    started = time.perf_counter()
    done = await restore_lost_markers(redis_client, names, db_engine, ttl_seconds=TTL, now=NOW)
    seconds = time.perf_counter() - started
    logging.getLogger(__name__).warning("restored 100000 markers in %.2f s", seconds)
    assert done is not None
    assert done.written == 100_000
    assert await redis_client.get(names.seen("front", _sha(99_999))) == b"99999-0"
    assert seconds < 60, seconds

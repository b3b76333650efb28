"""The second line behind the watcher's dedupe markers: PostgreSQL gives them back to Redis.

The `seen` markers that keep the watcher from publishing a file twice live only in Redis. When
Redis loses its data (no persistence, a flush, a new server), the next scan would publish every
file still on disk again: duplicate events, and alerts sent again. The projection knows every
file it was given (camera, content hash, entry id, observed time), so `restore_lost_markers`
writes the markers back from it (`streams.watch.markers.restore_markers`).

When: once per Redis data set. The data set's token (`hsi.infra.redis.epoch_token`, the one
`DataLossMonitor` watches) is copied to `markers_restored` after a restore; a token that differs
(a fresh, empty Redis, or one that lost its data while HSI ran) means the markers are not there.
Every process that reaches PostgreSQL and runs a watcher calls it before its start-up scan
(`hsi up`, `hsi watch`, `hsi ingest` with `DATABASE_URL`), and a pipeline with the project
stage calls it at start and whenever its `DataLossMonitor` reports `redis.data_lost`. Two
processes restoring at once do the same idempotent work (`SET NX`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.redis import RedisClient, epoch_token
from projections.known_files import has_files, known_files
from streams.clock import utc_now
from streams.names import StreamNames
from streams.watch.markers import KnownFile, Restored, restore_markers

log = logging.getLogger("hsi.markers")


async def _known(engine: AsyncEngine, since: datetime) -> AsyncIterator[KnownFile]:
    async for row in known_files(engine, since):
        yield KnownFile(*row)


async def restore_lost_markers(
    redis: RedisClient,
    names: StreamNames,
    engine: AsyncEngine,
    *,
    ttl_seconds: int,
    now: datetime | None = None,
) -> Restored | None:
    """Give the dedupe markers back from PostgreSQL unless this Redis data set has them; what
    was restored, or None when nothing had to be."""
    token = await epoch_token(redis, names.epoch)
    done: object = await redis.get(names.markers_restored)
    if isinstance(done, str):
        done = done.encode()
    if token and done == token:
        return None
    if not await has_files(engine):  # a new installation: nothing was ever published
        await redis.set(names.markers_restored, token)
        return None
    moment = now or utc_now()
    started = time.perf_counter()
    restored = await restore_markers(
        redis,
        names,
        _known(engine, moment - timedelta(seconds=ttl_seconds)),
        ttl_seconds=ttl_seconds,
        now=moment,
    )
    await redis.set(names.markers_restored, token)
    log.warning(
        "redis.markers_restored",
        extra={
            "detail": "this Redis data set had no dedupe markers: they were given back from "
            "PostgreSQL, so files still on disk are not published again",
            "written": restored.written,
            "present": restored.present,
            "expired": restored.expired,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return restored

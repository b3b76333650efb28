"""Dedupe markers given back to a Redis that lost them, from files HSI already knows.

The watcher's `seen` markers (`streams.watch.ledger`) live only in Redis. A Redis that comes
back empty (no persistence, flushed, replaced) would let the next scan publish every file still
on disk again. `restore_markers` writes the markers back from a plain iterable of `KnownFile`s
(the application shell reads them from the projection), before the watcher scans:

- each marker holds the entry id the file was first published under (`PLACEHOLDER` when unknown),
  as `PUBLISH_ONCE` would have written it;
- its TTL is what is left of the dedupe TTL since the file was observed (`remaining_ttl`): a
  file observed longer ago than the TTL gets no marker, as its own would have expired;
- `SET NX`: a marker already there (written since the loss) is left alone;
- in pipelined chunks, so a camera with 100 000 files costs a few hundred round trips.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from redis.asyncio import Redis, RedisCluster

from streams.names import StreamNames

PLACEHOLDER = "restored"  # the marker's value when the first entry id is not known
CHUNK = 2_000  # markers per pipeline round trip


class KnownFile(NamedTuple):
    """A file a camera already published: its content hash, first entry id and observed time."""

    camera_id: str
    sha256: str
    entry_id: str | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class Restored:
    """What `restore_markers` did."""

    written: int = 0  # markers set
    present: int = 0  # markers already there (left alone)
    expired: int = 0  # files observed longer ago than the TTL: no marker


def remaining_ttl(observed_at: datetime, now: datetime, ttl_seconds: int) -> int | None:
    """Seconds left of a marker set when the file was observed, or None when it has expired.

    A file observed "in the future" (a clock step) keeps the whole TTL, never more.
    """
    elapsed = (now - observed_at).total_seconds()
    left = math.ceil(ttl_seconds - max(0.0, elapsed))
    return left if left > 0 else None


async def restore_markers(
    client: Redis | RedisCluster,
    names: StreamNames,
    files: Iterable[KnownFile] | AsyncIterable[KnownFile],
    *,
    ttl_seconds: int,
    now: datetime,
    chunk: int = CHUNK,
) -> Restored:
    """Set the `seen` marker of every file that would still have one (`SET NX EX`), pipelined."""
    written = present = expired = 0
    batch: list[tuple[str, str, int]] = []

    async def flush() -> None:
        nonlocal written, present
        if not batch:
            return
        # Not a transaction: the keys of many cameras span slots; each SET NX is atomic alone.
        pipe = client.pipeline(transaction=False)
        for key, value, ttl in batch:
            pipe.set(key, value, ex=ttl, nx=True)
        results = await pipe.execute()
        done = sum(1 for result in results if result)
        written += done
        present += len(results) - done
        batch.clear()

    async for file in _each(files):
        ttl = remaining_ttl(file.observed_at, now, ttl_seconds)
        if ttl is None:
            expired += 1
            continue
        key = names.seen(file.camera_id, file.sha256)
        batch.append((key, file.entry_id or PLACEHOLDER, ttl))
        if len(batch) >= chunk:
            await flush()
    await flush()
    return Restored(written=written, present=present, expired=expired)


async def _each(files: Iterable[KnownFile] | AsyncIterable[KnownFile]) -> AsyncIterable[KnownFile]:
    if isinstance(files, AsyncIterable):
        async for file in files:
            yield file
    else:
        for file in files:
            yield file

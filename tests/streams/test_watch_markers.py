"""Dedupe markers given back to Redis: the TTL left, `SET NX`, pipelined chunks, and the
watcher's script reading a restored marker as a duplicate."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from streams.names import StreamNames
from streams.schemas import FileObserved
from streams.watch.ledger import Ledger
from streams.watch.markers import PLACEHOLDER, KnownFile, remaining_ttl, restore_markers

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86_400
TTL = 30 * DAY


@pytest.mark.parametrize(
    ("observed_at", "left"),
    [
        (NOW, TTL),
        (NOW - timedelta(days=1), TTL - DAY),
        (NOW - timedelta(seconds=0.4), TTL),  # a part of a second rounds up: never shortened
        (NOW - timedelta(days=30) + timedelta(seconds=1), 1),
        (NOW - timedelta(days=30), None),  # its marker would have expired just now
        (NOW - timedelta(days=45), None),
        (NOW + timedelta(hours=1), TTL),  # observed "in the future" (a clock step): whole TTL
    ],
)
def test_remaining_ttl(observed_at: datetime, left: int | None) -> None:
    """A restored marker lives as long as the one set when the file was observed would."""
    assert remaining_ttl(observed_at, NOW, TTL) == left


def _sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


async def test_markers_come_back_with_the_ttl_left_and_existing_ones_stay(
    redis_client: Redis, key_prefix: str
) -> None:
    """Fresh files get their marker (entry id, or the placeholder) with the TTL left; expired
    ones get none; a marker already there is left alone."""
    names = StreamNames(key_prefix)
    await redis_client.set(names.seen("front", _sha(3)), "9-0")
    files = [
        KnownFile("front", _sha(1), "1-0", NOW - timedelta(days=1)),
        KnownFile("back", _sha(2), None, NOW - timedelta(days=29)),
        KnownFile("front", _sha(3), "3-0", NOW),  # already there
        KnownFile("front", _sha(4), "4-0", NOW - timedelta(days=31)),  # expired
    ]
    done = await restore_markers(redis_client, names, files, ttl_seconds=TTL, now=NOW, chunk=2)
    assert (done.written, done.present, done.expired) == (2, 1, 1)
    assert await redis_client.get(names.seen("front", _sha(1))) == b"1-0"
    assert await redis_client.get(names.seen("back", _sha(2))) == PLACEHOLDER.encode()
    assert await redis_client.get(names.seen("front", _sha(3))) == b"9-0"
    assert not await redis_client.exists(names.seen("front", _sha(4)))
    assert TTL - DAY - 5 <= await redis_client.ttl(names.seen("front", _sha(1))) <= TTL - DAY
    assert 0 < await redis_client.ttl(names.seen("back", _sha(2))) <= DAY


async def test_the_watcher_reads_a_restored_marker_as_a_duplicate(
    redis_client: Redis, key_prefix: str
) -> None:
    """After a restore, publishing the same content again writes no entry and names the
    entry the file was first published under."""
    names = StreamNames(key_prefix)

    async def known() -> AsyncIterator[KnownFile]:
        yield KnownFile("front", _sha(7), "1700000000000-0", NOW)

    await restore_markers(redis_client, names, known(), ttl_seconds=TTL, now=NOW)
    entry = FileObserved(
        camera_id="front",
        path="front/a.jpg",
        sha256=_sha(7),
        size=10,
        mime="image/jpeg",
        media_kind="image",
        captured_at=NOW,
        capture_source="mtime",
        observed_at=NOW,
    )
    published = await Ledger(redis_client, names, TTL).publish_once(entry)
    assert (published.new, published.entry_id) == (False, "1700000000000-0")
    assert await redis_client.xlen(names.files("front")) == 0

"""Dead-letter operations (`hsi dlq list|show|retry|drop`) against the real server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from streams.dlq import (
    DeadLetterNotFoundError,
    DeadLetterNotRetryableError,
    dead_entry,
    dead_fields,
    drop_dead,
    list_dead,
    retry_dead,
    show_dead,
)
from streams.envelope import (
    DATA_FIELD,
    HEADER_RETRY_OF,
    HEADER_TRACEPARENT,
    decode,
    entry_fields,
)
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import FileObserved

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _file(camera: str) -> FileObserved:
    return FileObserved(
        camera_id=camera,
        path="Front Door/snap/MDAlarm_20260101-120000.jpg",
        sha256="ab" * 32,
        size=1234,
        mime="image/jpeg",
        media_kind="image",
        captured_at=NOW,
        capture_source="filename",
        observed_at=NOW,
    )


async def _bury(
    redis: Redis, names: StreamNames, camera: str, *, deleted: bool = False
) -> tuple[str, str, bytes]:
    """Publish a file entry and write the dead letter the reclaimer would write for it.

    Returns (dead id, source entry id, original `__data__`).
    """
    source = names.files(camera)
    fields = entry_fields(_file(camera), {HEADER_TRACEPARENT: TRACEPARENT})
    entry_id = (await redis.xadd(source, {**fields})).decode()
    data = fields[DATA_FIELD]
    entry = dead_entry(
        camera=camera,
        stream=source,
        entry_id=entry_id,
        group=Group.DETECT,
        deliveries=5,
        last_error="RuntimeError: cannot decode image",
        data=None if deleted else data,
        now=NOW,
    )
    dead_id = await redis.xadd(names.dead(camera), {**dead_fields(entry, data)})
    return dead_id.decode(), entry_id, data


async def test_list_and_show_a_dead_letter(redis_client: Redis, key_prefix: str) -> None:
    """Listing gives each dead letter's facts, newest first; show decodes the original entry."""
    names = StreamNames(key_prefix)
    front_dead, front_entry, _ = await _bury(redis_client, names, "front_door")
    # Ids of two streams written in one millisecond are equal: move the clock past it so that
    # "newest first" has one answer.
    await asyncio.sleep(0.003)
    garage_dead, _, _ = await _bury(redis_client, names, "garage", deleted=True)
    assert garage_dead != front_dead

    letters = await list_dead(redis_client, names, ["front_door", "garage"], limit=10)

    assert [letter.dead_id for letter in letters] == [garage_dead, front_dead]
    garage, front = letters
    assert front.camera == "front_door"
    assert front.source_stream == names.files("front_door")
    assert front.entry_id == front_entry
    assert front.group == "detect"
    assert front.deliveries == 5
    assert front.last_error == "RuntimeError: cannot decode image"
    assert front.dead_at == NOW
    assert front.original_type == "file.observed"
    assert front.retryable
    assert (garage.original_type, garage.retryable) == (None, False)
    assert [
        x.dead_id for x in await list_dead(redis_client, names, ["front_door", "garage"], 1)
    ] == [garage_dead]

    detail = await show_dead(redis_client, names, "front_door", front_dead)
    assert detail.letter == front
    assert detail.original == _file("front_door")
    assert detail.headers[HEADER_TRACEPARENT] == TRACEPARENT
    assert detail.headers["type"] == "file.observed"
    assert detail.original_error is None


async def test_dead_letter_carries_the_originals_traceparent(
    redis_client: Redis, key_prefix: str
) -> None:
    """The entry.dead is published with the original's traceparent, joining the file's trace."""
    names = StreamNames(key_prefix)
    dead_id, _, _ = await _bury(redis_client, names, "front_door")
    [(_, fields)] = await redis_client.xrange(names.dead("front_door"), dead_id, dead_id)
    _, headers = decode(fields[DATA_FIELD])
    assert headers[HEADER_TRACEPARENT] == TRACEPARENT


async def test_retry_republishes_the_original_with_retry_of_and_removes_the_dead_letter(
    redis_client: Redis, key_prefix: str
) -> None:
    """Retry puts the same body back on the source stream, marked retry_of, for the group."""
    names = StreamNames(key_prefix)
    source = names.files("front_door")
    await ensure_group(redis_client, source, Group.DETECT)
    dead_id, entry_id, data = await _bury(redis_client, names, "front_door")
    await redis_client.xreadgroup(Group.DETECT, "c1", {source: ">"})  # the first delivery
    await redis_client.xack(source, Group.DETECT, entry_id)  # acked when it was buried

    new_id = await retry_dead(redis_client, names, "front_door", dead_id)

    assert await redis_client.xlen(names.dead("front_door")) == 0
    reply: Any = await redis_client.xreadgroup(Group.DETECT, "c1", {source: ">"})
    [(delivered_id, fields)] = reply[0][1]
    assert delivered_id.decode() == new_id
    body, headers = decode(fields[DATA_FIELD])
    original_body, original_headers = decode(data)
    assert body == original_body
    assert headers == {**original_headers, HEADER_RETRY_OF: entry_id}


async def test_drop_removes_a_dead_letter(redis_client: Redis, key_prefix: str) -> None:
    """Drop deletes the dead letter; a second drop or show says it is not there."""
    names = StreamNames(key_prefix)
    dead_id, _, _ = await _bury(redis_client, names, "front_door")

    await drop_dead(redis_client, names, "front_door", dead_id)

    assert await list_dead(redis_client, names, ["front_door"]) == []
    with pytest.raises(DeadLetterNotFoundError, match="hsi dlq list"):
        await drop_dead(redis_client, names, "front_door", dead_id)
    with pytest.raises(DeadLetterNotFoundError, match=dead_id):
        await show_dead(redis_client, names, "front_door", dead_id)


async def test_retry_of_a_deleted_original_raises_a_clear_error(
    redis_client: Redis, key_prefix: str
) -> None:
    """A dead letter whose entry was deleted cannot be retried; it stays, to be dropped."""
    names = StreamNames(key_prefix)
    dead_id, _, _ = await _bury(redis_client, names, "front_door", deleted=True)
    before = await redis_client.xlen(names.files("front_door"))

    with pytest.raises(DeadLetterNotRetryableError, match=r"deleted.*hsi dlq drop"):
        await retry_dead(redis_client, names, "front_door", dead_id)

    assert await redis_client.xlen(names.dead("front_door")) == 1
    assert await redis_client.xlen(names.files("front_door")) == before


async def test_retry_of_an_unknown_dead_letter_raises_not_found(
    redis_client: Redis, key_prefix: str
) -> None:
    """Retrying an id that is not on the dead stream names the command that lists them."""
    names = StreamNames(key_prefix)
    with pytest.raises(DeadLetterNotFoundError, match="hsi dlq list"):
        await retry_dead(redis_client, names, "front_door", "1-0")

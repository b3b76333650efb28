"""Consumer groups made by HSI itself, against the real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from streams.groups import (
    MAX_RESTORED,
    POSITION_LUA,
    GroupPositions,
    GroupStart,
    ensure_group,
    group_start,
    is_existing_group_error,
    is_missing_group_error,
    position_of,
)
from streams.names import Group, StreamNames


async def _groups(redis: Redis, stream: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    return groups


async def test_ensure_group_is_idempotent(redis_client: Redis, key_prefix: str) -> None:
    """The first call creates the group (and the stream) from 0; later calls change nothing."""
    stream = StreamNames(key_prefix).files("front_door")

    assert await ensure_group(redis_client, stream, Group.DETECT) is True
    await redis_client.xadd(stream, {b"k": b"v"})
    assert await ensure_group(redis_client, stream, Group.DETECT) is False

    [info] = await _groups(redis_client, stream)
    assert info["name"] == b"detect"
    assert info["last-delivered-id"] == b"0-0"
    read = await redis_client.xreadgroup(Group.DETECT, "c1", {stream: ">"})
    assert read  # created from 0: the entry added after it is delivered


async def test_missing_group_is_recognized_after_destroy(
    redis_client: Redis, key_prefix: str
) -> None:
    """After XGROUP DESTROY, reads fail with NOGROUP and `is_missing_group_error` says so."""
    stream = StreamNames(key_prefix).files("front_door")
    await ensure_group(redis_client, stream, Group.DETECT)
    await redis_client.xgroup_destroy(stream, Group.DETECT)

    with pytest.raises(ResponseError) as read_error:
        await redis_client.xreadgroup(Group.DETECT, "c1", {stream: ">"})
    assert is_missing_group_error(read_error.value)
    with pytest.raises(ResponseError) as claim_error:
        await redis_client.xautoclaim(stream, Group.DETECT, "c1", 0)
    assert is_missing_group_error(claim_error.value)

    assert await ensure_group(redis_client, stream, Group.DETECT) is True


async def test_existing_group_error_is_not_a_missing_group(
    redis_client: Redis, key_prefix: str
) -> None:
    """BUSYGROUP from a second XGROUP CREATE is told apart from NOGROUP."""
    stream = StreamNames(key_prefix).files("front_door")
    await ensure_group(redis_client, stream, Group.DETECT)
    with pytest.raises(ResponseError) as busy:
        await redis_client.xgroup_create(stream, Group.DETECT, id="0")
    assert is_existing_group_error(busy.value)
    assert not is_missing_group_error(busy.value)


@pytest.mark.parametrize(
    ("exc", "missing"),
    [
        (ResponseError("NOGROUP No such key 's' or consumer group 'g'"), True),
        (ResponseError("BUSYGROUP Consumer Group name already exists"), False),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (ValueError("NOGROUP"), False),
    ],
)
def test_is_missing_group_error_recognizes_only_nogroup(exc: Exception, missing: bool) -> None:
    """Only a Redis NOGROUP reply counts as a missing group."""
    assert is_missing_group_error(exc) is missing


_POSITION = AsyncScript(None, (POSITION_LUA + "return position(KEYS[1], ARGV[1])").encode())  # type: ignore[arg-type]


async def _position(redis: Redis, stream: str, group: str) -> GroupStart | None:
    return position_of(await _POSITION([stream], [group], client=redis))


@pytest.mark.parametrize(
    ("entries", "read_by", "acked"),
    [
        (0, {}, 0),  # a new group on an empty stream: 0-0, nothing pending
        (5, {"c1": 5}, 5),  # all delivered and acknowledged
        (6, {"c1": 4, "c2": 2}, 1),  # some pending, on two consumers
        (6, {"c1": 3}, 0),  # delivered up to the third, three pending
        (MAX_RESTORED + 5, {"c1": MAX_RESTORED + 5}, 2),  # too many pending to put back
    ],
)
async def test_the_position_a_script_reads_is_the_one_group_start_reads(
    redis_client: Redis, key_prefix: str, entries: int, read_by: dict[str, int], acked: int
) -> None:
    """`POSITION_LUA`, the position a commit script returns, is `group_start`'s, whatever
    the group's state: pending entries of several consumers (with their delivery counts), more
    than `MAX_RESTORED` of them, none."""
    stream = StreamNames(key_prefix).files("front_door")
    await ensure_group(redis_client, stream, Group.DETECT)
    for index in range(entries):
        await redis_client.xadd(stream, {b"k": str(index).encode()})
    delivered: list[bytes] = []
    for consumer, count in read_by.items():
        [[_, read]] = await redis_client.xreadgroup(Group.DETECT, consumer, {stream: ">"}, count)
        delivered += [entry_id for entry_id, _ in read]
    if delivered:  # a second delivery of the first entry: a delivery count of 2
        await redis_client.xclaim(stream, Group.DETECT, "c2", 0, [delivered[0]])
    if acked:
        await redis_client.xack(stream, Group.DETECT, *delivered[:acked])

    expected = await group_start(redis_client, stream, Group.DETECT)
    assert expected is not None
    assert await _position(redis_client, stream, Group.DETECT) == expected


async def test_the_position_of_a_missing_group_or_stream_is_none(
    redis_client: Redis, key_prefix: str
) -> None:
    """No group (and no stream): None, as `group_start` says, and the script does not fail."""
    names = StreamNames(key_prefix)
    assert await _position(redis_client, names.files("nowhere"), Group.DETECT) is None
    stream = names.files("front_door")
    await ensure_group(redis_client, stream, Group.PROJECT)
    assert await _position(redis_client, stream, Group.DETECT) is None
    assert await group_start(redis_client, stream, Group.DETECT) is None


async def test_a_read_overtaken_by_a_scripts_position_is_not_kept(
    redis_client: Redis, key_prefix: str
) -> None:
    """A commit script's position is newer than a read sent before it: a `refresh` in flight
    when `remember` is told a position does not replace it; a later `refresh` does."""
    stream = StreamNames(key_prefix).files("front_door")
    await ensure_group(redis_client, stream, Group.DETECT)
    positions = GroupPositions(redis_client, Group.DETECT)
    told = GroupStart("5-0")

    reading = asyncio.create_task(positions.refresh(stream))
    await asyncio.sleep(0)  # the read is sent
    positions.remember(stream, told)
    assert await reading == told
    assert positions.get(stream) == told

    assert await positions.refresh(stream) == GroupStart("0-0")

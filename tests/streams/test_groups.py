"""Consumer groups made by HSI itself, against the real server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streams.groups import (
    ensure_group,
    is_existing_group_error,
    is_missing_group_error,
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

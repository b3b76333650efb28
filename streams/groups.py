"""Consumer groups: created by HSI itself, from the start of the stream.

Groups are made with `XGROUP CREATE key group 0 MKSTREAM` and an existing group (BUSYGROUP) is left
as it is. FastStream is never asked to create them: with `last_id="0"` on an existing group it spins
on the group's own pending entries. A stage or reclaimer that meets a deleted group (NOGROUP)
recreates it with `ensure_group` and carries on.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from streams.names import PROJECTED, STAGE_INPUT, Group, StreamKind, StreamNames

GROUP_START_ID = "0"


def is_missing_group_error(exc: BaseException) -> bool:
    """Whether `exc` is Redis saying the stream or its consumer group does not exist (NOGROUP)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def is_existing_group_error(exc: BaseException) -> bool:
    """Whether `exc` is Redis saying the consumer group already exists (BUSYGROUP)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSYGROUP")


def group_inputs(group: Group) -> tuple[StreamKind, ...]:
    """The per-camera streams a group consumes: its stage input, or every projected stream."""
    if group is Group.PROJECT:
        return PROJECTED
    return (STAGE_INPUT[group],)


async def ensure_group(redis: Redis | RedisCluster, stream: str, group: str) -> bool:
    """Create `group` on `stream` from its first entry (creating the stream too).

    Returns True when the group was created, False when it already existed.
    """
    try:
        await redis.xgroup_create(stream, group, id=GROUP_START_ID, mkstream=True)
    except ResponseError as exc:
        if is_existing_group_error(exc):
            return False
        raise
    return True


async def ensure_groups(
    redis: Redis | RedisCluster,
    names: StreamNames,
    cameras: Iterable[str],
    groups: Iterable[Group],
) -> int:
    """Create every group on each of its camera streams (one pipeline); returns how many were new.

    The pipeline is not a transaction: each key is its own command, so on Redis Cluster the
    commands are routed to the slot of their key.
    """
    wanted = list(groups)
    keys = [
        (names.stream(camera, kind), group.value)
        for camera in cameras
        for group in wanted
        for kind in group_inputs(group)
    ]
    if not keys:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for stream, group_name in keys:
            pipe.xgroup_create(stream, group_name, id=GROUP_START_ID, mkstream=True)
        results = await pipe.execute(raise_on_error=False)
    created = 0
    for result in results:
        if isinstance(result, BaseException):
            if is_existing_group_error(result):
                continue
            raise result
        created += 1
    return created

"""Retention's streams: the MINID a stream may be trimmed with (`safe_minid`, pure), and the
trim itself, or in a dry run the count of what it would remove (see `projections.retention`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from streams.replies import id_key, reply_text

_MAX_SEQUENCE: Final = 2**64 - 1
NOTHING: Final = "0-0"  # a MINID that trims nothing


# --- decisions ----------------------------------------------------------------------------------


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def next_id(entry_id: str) -> str:
    """The smallest stream id greater than `entry_id`."""
    milliseconds, sequence = id_key(entry_id)
    if sequence >= _MAX_SEQUENCE:
        return format_id((milliseconds + 1, 0))
    return format_id((milliseconds, sequence + 1))


@dataclass(frozen=True)
class GroupPosition:
    """Where a consumer group stands on a stream (from XINFO GROUPS and the XPENDING summary)."""

    name: str
    last_delivered_id: str
    oldest_pending_id: str | None = None


def safe_minid(cutoff_ms: int, groups_info: Iterable[GroupPosition]) -> str:
    """The MINID to trim a stream with: the cutoff, lowered so that every group keeps its pending
    entries and every entry it has not been delivered yet."""
    bound = (max(0, cutoff_ms), 0)
    for group in groups_info:
        bound = min(bound, id_key(next_id(group.last_delivered_id)))
        if group.oldest_pending_id is not None:
            bound = min(bound, id_key(group.oldest_pending_id))
    return format_id(bound)


@dataclass(frozen=True)
class StreamTrim:
    """One stream's trim: the MINID used (None when it was not trimmed) and why not."""

    stream: str
    minid: str | None
    trimmed: int = 0
    skipped: str | None = None


# --- streams ------------------------------------------------------------------------------------


async def group_positions(redis: Redis | RedisCluster, stream: str) -> list[GroupPosition] | None:
    """Every group of `stream` with its position; None when the stream does not exist."""
    try:
        infos: Any = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    positions = []
    for info in infos:
        name = reply_text(info["name"])
        summary: Any = await redis.xpending(stream, name)
        oldest = summary.get("min") if summary.get("pending") else None
        positions.append(
            GroupPosition(
                name=name,
                last_delivered_id=reply_text(info["last-delivered-id"]),
                oldest_pending_id=None if oldest is None else reply_text(oldest),
            )
        )
    return positions


async def count_below(redis: Redis | RedisCluster, stream: str, minid: str) -> int:
    """How many entries of `stream` a trim at `minid` would remove."""
    if id_key(minid) == (0, 0):
        return 0
    count, start = 0, "-"
    while True:
        page: Any = await redis.xrange(stream, min=start, max=f"({minid}", count=1000)
        count += len(page)
        if len(page) < 1000:
            return count
        start = f"({reply_text(page[-1][0])}"


async def trim_stream(
    redis: Redis | RedisCluster,
    stream: str,
    cutoff_ms: int,
    required_groups: Iterable[str],
    *,
    dry_run: bool = False,
) -> StreamTrim:
    """Trim `stream` at its safe MINID; with `dry_run`, only count what that would remove."""
    positions = await group_positions(redis, stream)
    if positions is None:
        return StreamTrim(stream, None, skipped="no such stream")
    missing = sorted(set(required_groups) - {p.name for p in positions})
    if missing:
        return StreamTrim(
            stream, None, skipped=f"group {', '.join(missing)} not created yet: never trimmed"
        )
    minid = safe_minid(cutoff_ms, positions)
    if dry_run:
        return StreamTrim(stream, minid, await count_below(redis, stream, minid))
    trimmed = await redis.xtrim(stream, minid=minid, approximate=False)
    return StreamTrim(stream, minid, int(trimmed))

"""Burying a consumer group's entries in the camera's dead stream.

An entry that keeps failing, or that was deleted while pending, becomes an `entry.dead` on the
camera's dead stream (`streams.dlq`), and its source entry is acknowledged in the same MULTI: both
keys carry the camera's hash tag, so they share a slot, on Redis Cluster too. A buried entry
counts as outcome `dead` of its group in `hsi_entries_processed_total`, and gets a `dead` span in
the entry's own trace when it carries a `traceparent` (see `streams.tracing`). The reclaimer
(`streams.reclaim`) decides what to bury, and logs each burial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry.trace import Status, StatusCode
from redis.asyncio import Redis, RedisCluster

from streams.dlq import dead_entry, dead_fields
from streams.envelope import decode
from streams.replies import reply_text
from streams.tracing import (
    ATTR_CAMERA,
    ATTR_ENTRY_ID,
    ATTR_GROUP,
    ATTR_OUTCOME,
    ATTR_STREAM,
    DEAD,
    StageTelemetry,
    parent_context,
)
from streams.transactions import transaction


@dataclass(frozen=True)
class Burial:
    """An entry to bury: the deliveries made, the last error known, and its `__data__` field
    (None: the entry was deleted before it was processed)."""

    entry_id: str
    deliveries: int
    last_error: str
    data: bytes | None


async def bury(
    redis: Redis | RedisCluster,
    *,
    dead_stream: str,
    camera: str,
    stream: str,
    group: str,
    burials: list[Burial],
    now: datetime,
) -> list[str]:
    """XADD each `entry.dead` and XACK its source entry, all in one MULTI (one slot); the ids of
    the dead entries, in order."""
    async with transaction(redis) as pipe:
        for burial in burials:
            entry = dead_entry(
                camera=camera,
                stream=stream,
                entry_id=burial.entry_id,
                group=group,
                deliveries=burial.deliveries,
                last_error=burial.last_error,
                data=burial.data,
                now=now,
            )
            # A fresh dict, so that mypy types it as redis-py's field mapping.
            pipe.xadd(dead_stream, {k: v for k, v in dead_fields(entry, burial.data).items()})
            pipe.xack(stream, group, burial.entry_id)
        results = await pipe.execute()
    return [reply_text(dead_id) for dead_id in results[::2]]


def record_dead(
    telemetry: StageTelemetry, *, camera: str, stream: str, group: str, burials: list[Burial]
) -> None:
    """Count the burials as outcome `dead`, and end the trace of each one that carries one."""
    labels = {"stage": group, "camera": camera, "outcome": DEAD}
    telemetry.instruments.entries_processed.add(len(burials), labels)
    for burial in burials:
        context = parent_context(_headers(burial.data))
        if context is None:
            continue  # no trace to end: never start a new one for a dead letter
        span = telemetry.tracer.start_span(
            DEAD,
            context=context,
            attributes={
                ATTR_CAMERA: camera,
                ATTR_STREAM: stream,
                ATTR_ENTRY_ID: burial.entry_id,
                ATTR_GROUP: group,
                ATTR_OUTCOME: DEAD,
                "hsi.deliveries": burial.deliveries,
            },
        )
        span.set_status(Status(StatusCode.ERROR, burial.last_error[:300]))
        span.end()


def _headers(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return decode(data)[1]
    except Exception:  # an unreadable envelope just means no trace to carry on
        return {}

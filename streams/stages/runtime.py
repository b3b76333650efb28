"""Running a stage over many cameras with FastStream batch subscribers.

One subscriber per (stage, camera) reads the camera's input stream in its consumer group with
`XREADGROUP … COUNT n` (FastStream's batch mode) and hands each batch to the stage's handler.
The ack policy is manual: the handler writes its outputs and XACKs in one MULTI
(`streams.stages.outcome`). An entry the handler could not process stays pending for the
reclaimer. Subscribers are added to the running broker when a new camera appears. The broker may
be a `RedisBroker` or a `RedisClusterBroker`: each subscriber reads one stream, so its
XREADGROUP goes to the node that owns the camera's slot.

The subscribers take a parser and a decoder of their own (`RawBatch`). FastStream's batch parser
would read every entry's envelope, JSON-decode its body, dump the list of bodies to JSON again,
and its decoder would then load that JSON once more, only for the handler to read each envelope
itself: a third of the stage's CPU for a zero-cost detector. `RawBatch` hands the handler the
entries exactly as XREADGROUP returned them.

Each subscriber's blocking XREADGROUP holds one of the broker's connections for as long as it
runs, so each one adds a connection to the broker's pool (`_make_room`): redis-py caps a pool at
100 connections by default, which the subscribers of about 12 cameras (8 each in `hsi up`) fill,
after which every new read fails with "Too many connections" and FastStream retries it only
every 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage
from faststream.redis.message import RedisBatchStreamMessage as BatchMessage
from redis.asyncio import Redis, RedisCluster

from streams.groups import ensure_group
from streams.names import Group, StreamKind, StreamNames
from streams.reclaim import BatchHandler, StreamEntry

logger = logging.getLogger("hsi.stage")


@dataclass(frozen=True)
class CameraSelection:
    """Which cameras a worker owns: all, a list, or shard `index` of `count` (stable hash)."""

    cameras: frozenset[str] = frozenset()
    shard_index: int = 0
    shard_count: int = 1

    def __post_init__(self) -> None:
        if self.shard_count < 1 or not 0 <= self.shard_index < self.shard_count:
            raise ValueError(
                f"shard {self.shard_index}/{self.shard_count} is not valid: use i/n with 0 <= i < n"
            )

    @classmethod
    def parse(cls, cameras: str | None = None, shard: str | None = None) -> CameraSelection:
        """From `--cameras a,b` and `--shard i/n` command-line values."""
        chosen = frozenset(c.strip() for c in (cameras or "").split(",") if c.strip())
        if not shard:
            return cls(chosen)
        index, sep, count = shard.partition("/")
        if not sep or not index.isdigit() or not count.isdigit():
            raise ValueError(f"--shard {shard!r}: expected i/n, e.g. 0/2")
        return cls(chosen, int(index), int(count))

    def owns(self, camera: str) -> bool:
        if self.cameras and camera not in self.cameras:
            return False
        return zlib.crc32(camera.encode()) % self.shard_count == self.shard_index


@dataclass(frozen=True)
class ConsumeConfig:
    read_count: int = 100
    block_ms: int = 1000


class RawBatch:
    """FastStream parser and decoder for a stage subscriber: the batch as XREADGROUP returned it.

    The parser makes FastStream's batch message without reading any entry (FastStream's own
    parser decodes every envelope and body); the decoder turns it into the handler's
    `(entry id, fields)` list. The message still names the client and group, like FastStream's.
    """

    def __init__(self, redis: Redis | RedisCluster, group: str) -> None:
        self._redis = redis
        self._group = group

    async def parse(self, message: Mapping[str, Any]) -> StreamMessage[Any]:
        return BatchMessage(
            raw_message=message,
            body=b"",
            consumer=self._redis,  # type: ignore[arg-type]  # FastStream's consumer protocol
            group=self._group,
        )

    @staticmethod
    async def decode(message: StreamMessage[Any]) -> list[StreamEntry]:
        raw = message.raw_message
        return [
            (entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields)
            for entry_id, fields in zip(raw["message_ids"], raw["data"], strict=True)
        ]


def _pool_of(broker: RedisBroker) -> Any:
    """The broker's connection pool when it has one to size (a single server; a cluster client
    keeps a pool per node), else None."""
    try:
        client = broker.config.connection.client
    except Exception:  # not connected, or a broker without a single client
        return None
    pool = getattr(client, "connection_pool", None)
    return pool if isinstance(getattr(pool, "max_connections", None), int) else None


def _make_room(broker: RedisBroker) -> None:
    """Grow the broker's pool by one connection, for one more blocking reader. It is never
    shrunk: redis-py would close the connections of reads still finishing when their
    subscribers stop (the broker's pool goes away with the broker)."""
    pool = _pool_of(broker)
    if pool is not None:
        pool.max_connections += 1


class StageRunner:
    """Subscribes one stage's handler to the input stream of each camera it is given."""

    def __init__(
        self,
        *,
        broker: RedisBroker,
        redis: Redis | RedisCluster,
        names: StreamNames,
        group: Group,
        kind: StreamKind,
        handler: BatchHandler,
        consumer: str,
        config: ConsumeConfig,
    ) -> None:
        self._broker = broker
        self._redis = redis
        self._names = names
        self.group = group
        self.kind = kind
        self._handler = handler
        self.consumer = consumer
        self._config = config
        self._subscribers: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._raw = RawBatch(redis, group.value)

    @property
    def cameras(self) -> frozenset[str]:
        return frozenset(self._subscribers)

    def streams(self) -> list[str]:
        return [self._names.stream(camera, self.kind) for camera in sorted(self._subscribers)]

    async def add_cameras(self, cameras: Iterable[str]) -> list[str]:
        """Subscribe to the cameras not yet subscribed; return the new ones."""
        added = []
        async with self._lock:
            for camera in sorted(set(cameras) - set(self._subscribers)):
                stream = self._names.stream(camera, self.kind)
                await ensure_group(self._redis, stream, self.group.value)
                subscriber = self._broker.subscriber(
                    stream=StreamSub(
                        stream,
                        group=self.group.value,
                        consumer=self.consumer,
                        batch=True,
                        max_records=self._config.read_count,
                        polling_interval=self._config.block_ms,
                    ),
                    ack_policy=AckPolicy.MANUAL,
                    persistent=False,
                    parser=self._raw.parse,
                    decoder=self._raw.decode,
                )
                subscriber(self._on_batch)
                _make_room(self._broker)
                await subscriber.start()
                self._subscribers[camera] = subscriber
                added.append(camera)
                logger.info(
                    "stage.subscribed",
                    extra={"stage": self.group.value, "camera": camera, "stream": stream},
                )
        return added

    async def _on_batch(self, entries: Any, message: RedisBatchStreamMessage) -> None:
        # `entries` is what `RawBatch.decode` made (typed Any: FastStream validates nothing).
        stream = message.raw_message["channel"]
        try:
            result = await self._handler(stream, entries)
        except Exception:
            logger.exception(
                "stage.batch_failed",
                extra={"stage": self.group.value, "stream": stream, "entries": len(entries)},
            )
            return
        for entry_id, error in result.failed.items():
            logger.warning(
                "stage.entry_failed",
                extra={
                    "stage": self.group.value,
                    "stream": stream,
                    "entry_id": entry_id,
                    "error": error,
                },
            )

    async def stop(self) -> None:
        """Stop every subscriber; a batch in hand is finished first."""
        async with self._lock:
            for subscriber in self._subscribers.values():
                await subscriber.stop()
            self._subscribers.clear()

"""Running a stage over many cameras with FastStream batch subscribers.

One subscriber per (stage, camera) reads the camera's input stream in its consumer group with
`XREADGROUP … COUNT n` (FastStream's batch mode) and hands each batch to the stage's handler.
The ack policy is manual: the handler writes its outputs and XACKs in one MULTI
(`streams.stages.outcome`). An entry the handler could not process stays pending for the
reclaimer. Subscribers are added to the running broker when a new camera appears. The broker may
be a `RedisBroker` or a `RedisClusterBroker`: each subscriber reads one stream, so its
XREADGROUP goes to the node that owns the camera's slot.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage
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
                )
                subscriber(self._on_batch)
                await subscriber.start()
                self._subscribers[camera] = subscriber
                added.append(camera)
                logger.info(
                    "stage.subscribed",
                    extra={"stage": self.group.value, "camera": camera, "stream": stream},
                )
        return added

    async def _on_batch(self, body: list[Any], message: RedisBatchStreamMessage) -> None:
        raw = message.raw_message
        stream = raw["channel"]
        entries: list[StreamEntry] = [
            (entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields)
            for entry_id, fields in zip(raw["message_ids"], raw["data"], strict=True)
        ]
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

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

A lost consumer group (XGROUP DESTROY, the stream deleted, the server flushed) makes FastStream
stop the subscriber for good (NOGROUP: it logs that the application must be restarted). The runner
watches its subscribers every `block_ms`: a stopped one gets its group recreated where it was last
seen (`streams.groups.GroupPositions`: returned by each batch's commit script, or read after the
batch), a `stage.group_recreated` warning, and is started again, so the stage goes on without a
restart, losing no entry and running none it had acknowledged again (but for a batch in flight at
the loss: see `streams.groups`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage as BatchMessage
from redis.asyncio import Redis, RedisCluster

from streams.contract import BatchHandler, StreamEntry, error_text
from streams.groups import GroupPositions, ensure_group
from streams.names import Group, StreamKind, StreamNames
from streams.replies import reply_text

logger = logging.getLogger("hsi.stage")


class _StreamSub(StreamSub[Any]):
    """FastStream's `StreamSub`, not copied when there is no prefix to add. The subscriber asks
    for its `StreamSub` with the broker's prefix added before every XREADGROUP and for every
    batch's log context, and `add_prefix` deep-copies it each time (a few percent of a stage's
    CPU at a camera's pace); HSI's brokers have no prefix (stream keys carry HSI's own)."""

    def add_prefix(self, prefix: str) -> Self:
        return self if not prefix else super().add_prefix(prefix)


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
            (reply_text(entry_id), fields)
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
        positions: GroupPositions | None = None,
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
        # Where the group stands on each stream, to recreate it there when it is lost.
        self.positions = positions or GroupPositions(redis, group.value)
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        # Position reads after batches whose commit did not return it (`_remember_soon`): one in
        # flight per stream, and the streams whose batches finished while it was.
        self._remembering: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    @property
    def cameras(self) -> frozenset[str]:
        return frozenset(self._subscribers)

    @property
    def stopped(self) -> frozenset[str]:
        """Cameras whose subscriber is not running: its group was lost and is being recreated."""
        return frozenset(c for c, s in self._subscribers.items() if not s.running)

    def streams(self) -> list[str]:
        return [self._names.stream(camera, self.kind) for camera in sorted(self._subscribers)]

    async def add_cameras(self, cameras: Iterable[str]) -> list[str]:
        """Subscribe to the cameras not yet subscribed; return the new ones (none once the runner
        is stopped: a camera discovered while the process stops is left to the next start)."""
        added: list[str] = []
        async with self._lock:
            if self._closed:
                return added
            for camera in sorted(set(cameras) - set(self._subscribers)):
                stream = self._names.stream(camera, self.kind)
                await ensure_group(self._redis, stream, self.group.value)
                await self.positions.refresh(stream)
                subscriber = self._broker.subscriber(
                    stream=_StreamSub(
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
                subscriber(self._handler_of(stream))
                _make_room(self._broker)
                await subscriber.start()
                self._subscribers[camera] = subscriber
                added.append(camera)
                logger.info(
                    "stage.subscribed",
                    extra={"stage": self.group.value, "camera": camera, "stream": stream},
                )
            if self._subscribers and self._watcher is None:
                self._watcher = asyncio.create_task(
                    self._watch(), name=f"hsi-stage-watch-{self.group.value}-{self.kind.value}"
                )
        return added

    def _handler_of(self, stream: str) -> Callable[[Any], Awaitable[None]]:
        """The subscriber's handler for `stream`: it takes the batch alone. The broker injects
        nothing (`apply_types=False`): FastStream's message, asked for by an annotation, was
        resolved in a worker thread for every batch."""

        async def on_batch(entries: Any) -> None:
            await self._on_batch(stream, entries)

        return on_batch

    async def _on_batch(self, stream: str, entries: Any) -> None:
        # `entries` is what `RawBatch.decode` made (typed Any: FastStream validates nothing).
        try:
            result = await self._handler(stream, entries)
        except Exception:
            logger.exception(
                "stage.batch_failed",
                extra={"stage": self.group.value, "stream": stream, "entries": len(entries)},
            )
            self._remember_soon(stream)
            return
        if result.position is not None:
            # Read by the commit itself, after its XACKs: fresher than any read in flight.
            self.positions.remember(stream, result.position)
        else:
            self._remember_soon(stream)
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

    def _remember_soon(self, stream: str) -> None:
        """Read where the group stands on `stream` after a batch whose commit did not say,
        beside the subscriber's next read rather than before it. A group lost before the read
        completes is recreated where it was last seen, as when it is lost between a batch's
        commit and that read: the module doc's batch in flight."""
        task = self._remembering.get(stream)
        if task is not None and not task.done():
            self._again.add(stream)
            return
        self._remembering[stream] = asyncio.create_task(
            self._remember_until_seen(stream), name=f"hsi-stage-position-{self.group.value}"
        )

    async def _remember_until_seen(self, stream: str) -> None:
        while True:
            self._again.discard(stream)
            await self._remember(stream)
            if stream not in self._again:
                return

    async def _remember(self, stream: str) -> None:
        """Read where the group now stands on `stream` (kept for recreating it)."""
        try:
            await self.positions.refresh(stream)
        except Exception as exc:  # the next batch reads it again; only a recreation needs it
            logger.warning(
                "stage.position_unread",
                extra={"stage": self.group.value, "stream": stream, "error": error_text(exc)},
            )

    async def _watch(self) -> None:
        """Bring back the subscribers FastStream stopped (a lost group), every `block_ms`."""
        interval = max(self._config.block_ms, 10) / 1000
        while True:
            await asyncio.sleep(interval)
            for camera in sorted(self.stopped):
                try:
                    await self._recover(camera)
                except Exception as exc:  # Redis away: tried again at the next look
                    logger.warning(
                        "stage.recover_failed",
                        extra={
                            "stage": self.group.value,
                            "camera": camera,
                            "error": error_text(exc),
                        },
                    )

    async def _recover(self, camera: str) -> None:
        """Recreate the group of a stopped subscriber where it was, then start it again."""
        async with self._lock:
            subscriber = self._subscribers.get(camera)
            if subscriber is None or subscriber.running:
                return
            stream = self._names.stream(camera, self.kind)
            recreated = await self.positions.recreate(stream)
            logger.warning(
                "stage.group_recreated",
                extra={
                    "stage": self.group.value,
                    "camera": camera,
                    "stream": stream,
                    "start_id": recreated.start_id,
                    "restored": recreated.restored,
                    "group_created": recreated.created,
                },
            )
            await subscriber.start()
            await self._remember(stream)

    async def stop(self) -> None:
        """Stop every subscriber; a batch in hand is finished first."""
        self._closed = True
        for task in self._remembering.values():
            task.cancel()
        for task in self._remembering.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._remembering.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        async with self._lock:
            for subscriber in self._subscribers.values():
                await subscriber.stop()
            self._subscribers.clear()

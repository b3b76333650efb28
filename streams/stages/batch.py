"""The batch stage: detections of one camera → `batch.closed` incidents.

The decisions are `streams.batching`'s pure functions. The open batch of a camera is kept in
Redis (`{cam}:open-batch`, JSON) and changed only inside a WATCH/MULTI together with the XADD of
closed batches and the XACK of the detections: a crash leaves either the old state with the
detections pending, or the new state with them acknowledged. Two batch workers on one camera
cannot both close a batch: the loser of the WATCH race retries on the new state. Batch ids are
derived from the camera and the first entry id, so a batch is closed exactly once. The state key,
the detections and the batches streams carry the camera's hash tag, so the WATCH/MULTI stays in
one slot and runs unchanged on Redis Cluster (redis-py's cluster transactions support WATCH).

Items are timed by the detection's `observed_at` (HSI's own clock at upload time), not the
camera's capture time, so a camera with a wrong clock still batches correctly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import WatchError

from streams.batching import BatchConfig, Closed, DetectionItem, OpenBatch, decide, tick
from streams.envelope import HEADER_TRACEPARENT, entry_fields, read_fields
from streams.names import Group, StreamNames
from streams.reclaim import HandlerResult, StreamEntry
from streams.schemas import (
    BatchClosed,
    BatchDetection,
    DetectionCompleted,
    DetectionFailed,
    EntryError,
)
from streams.transactions import transaction

logger = logging.getLogger("hsi.batch")


def _epoch() -> float:
    return datetime.now(UTC).timestamp()


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class _State:
    """The open batch and the detections it holds, as stored in Redis."""

    def __init__(self, batch: OpenBatch | None, members: dict[str, BatchDetection]) -> None:
        self.batch = batch
        self.members = members

    @classmethod
    def load(cls, raw: bytes | str | None) -> _State:
        if not raw:
            return cls(None, {})
        data: dict[str, Any] = orjson.loads(raw)
        batch_data = data["batch"]
        batch = OpenBatch(
            batch_id=batch_data["batch_id"],
            camera=batch_data["camera"],
            started_at=batch_data["started_at"],
            last_at=batch_data["last_at"],
            entry_ids=tuple(batch_data["entry_ids"]),
            detection_count=batch_data["detection_count"],
            label_confidence=tuple((k, v) for k, v in batch_data["label_confidence"]),
        )
        members = {m["entry_id"]: BatchDetection.model_validate(m) for m in data["members"]}
        return cls(batch, members)

    def dump(self) -> bytes | None:
        if self.batch is None:
            return None
        return orjson.dumps(
            {
                "batch": asdict(self.batch),
                "members": [
                    self.members[i].model_dump(mode="json")
                    for i in self.batch.entry_ids
                    if i in self.members
                ],
            }
        )


class BatchStage:
    """The batch handler of group `batch`, and the timer that closes idle batches."""

    group = Group.BATCH

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        names: StreamNames,
        config: BatchConfig,
        clock: Callable[[], float] = _epoch,
    ) -> None:
        self._redis = redis
        self._names = names
        self._config = config
        self._clock = clock

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        camera, _ = self._names.parse(stream)
        failed: dict[str, str] = {}
        items: list[tuple[DetectionItem, BatchDetection | None, str | None]] = []
        done: list[str] = []
        for entry_id, fields in entries:
            try:
                entry, headers = read_fields(fields)
            except EntryError as exc:
                failed[entry_id] = f"unreadable entry: {exc}"
                continue
            done.append(entry_id)
            at = (
                entry.observed_at.timestamp()
                if isinstance(entry, DetectionCompleted | DetectionFailed)
                else self._clock()
            )
            if isinstance(entry, DetectionCompleted) and entry.objects:
                member = BatchDetection(
                    entry_id=entry_id,
                    file_entry_id=entry.file_entry_id,
                    path=entry.path,
                    captured_at=entry.captured_at,
                    objects=entry.objects,
                )
                hits = tuple((o.label, o.confidence) for o in entry.objects)
                trace = headers.get(HEADER_TRACEPARENT)
                items.append((DetectionItem(entry_id, camera, at, hits), member, trace))
            else:
                items.append((DetectionItem(entry_id, camera, at, ()), None, None))
        await self._apply(camera, stream, items, done)
        return HandlerResult(failed=failed)

    async def _apply(
        self,
        camera: str,
        stream: str,
        items: Sequence[tuple[DetectionItem, BatchDetection | None, str | None]],
        done: list[str],
    ) -> None:
        key = self._names.open_batch(camera)
        async with transaction(self._redis) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    state = _State.load(await pipe.get(key))
                    closed: list[tuple[Closed, list[BatchDetection], str | None]] = []
                    trace: str | None = None
                    now = self._clock()
                    for item, member, item_trace in items:
                        decision = decide(state.batch, item, now, self._config)
                        if member is not None:
                            state.members[item.entry_id] = member
                            trace = trace or item_trace
                        for close in decision.closed:
                            members = [
                                state.members.pop(i)
                                for i in close.batch.entry_ids
                                if i in state.members
                            ]
                            closed.append((close, members, trace))
                        state.batch = decision.open_batch
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    for close, members, close_trace in closed:
                        self._emit(pipe, camera, close, members, close_trace)
                    self._store(pipe, key, state)
                    if done:
                        pipe.xack(stream, self.group.value, *done)
                    await pipe.execute()
                    for close, _, _ in closed:
                        self._log_closed(camera, close)
                    return
                except WatchError:
                    continue

    async def tick_camera(self, camera: str) -> bool:
        """Close the camera's open batch when its idle or window deadline has passed."""
        key = self._names.open_batch(camera)
        async with transaction(self._redis) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    state = _State.load(await pipe.get(key))
                    close = tick(state.batch, self._clock(), self._config)
                    if close is None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]  # untyped in redis-py
                        return False
                    members = [
                        state.members[i] for i in close.batch.entry_ids if i in state.members
                    ]
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    self._emit(pipe, camera, close, members, None)
                    pipe.delete(key)
                    await pipe.execute()
                    self._log_closed(camera, close)
                    return True
                except WatchError:
                    continue

    def _store(self, pipe: Any, key: str, state: _State) -> None:
        raw = state.dump()
        if raw is None:
            pipe.delete(key)
        else:
            pipe.set(key, raw)

    def _emit(
        self,
        pipe: Any,
        camera: str,
        close: Closed,
        members: list[BatchDetection],
        trace: str | None,
    ) -> None:
        batch = close.batch
        entry = BatchClosed(
            camera_id=camera,
            batch_id=batch.batch_id,
            detections=tuple(members),
            window_start=_moment(batch.started_at),
            window_end=_moment(batch.last_at),
            close_reason=close.reason.value,
            detection_count=batch.detection_count,
            object_types=tuple(sorted(batch.labels)),
            max_confidence=round(batch.max_confidence, 4),
            fast_path=close.reason.value == "fast_path",
            closed_at=_moment(close.closed_at),
        )
        headers = {HEADER_TRACEPARENT: trace} if trace else None
        pipe.xadd(self._names.batches(camera), entry_fields(entry, headers))

    @staticmethod
    def _log_closed(camera: str, close: Closed) -> None:
        logger.info(
            "batch.closed",
            extra={
                "camera": camera,
                "batch_id": close.batch.batch_id,
                "reason": close.reason.value,
                "detections": close.batch.detection_count,
            },
        )

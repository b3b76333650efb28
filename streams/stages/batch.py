"""The batch stage: detections of one camera → `batch.closed` incidents.

The decisions are `streams.batching`'s pure functions. The open batch of a camera is kept in
Redis (`{cam}:open-batch`, JSON) and changed only inside a WATCH/MULTI together with the XADD of
closed batches and the XACK of the detections: a crash leaves either the old state with the
detections pending, or the new state with them acknowledged. Two batch workers on one camera
cannot both close a batch: the loser of the WATCH race retries on the new state. Batch ids are
derived from the camera and the first entry id, so a batch is closed exactly once. The state key,
the detections and the batches streams carry the camera's hash tag, so the WATCH/MULTI stays in
one slot and runs unchanged on Redis Cluster (redis-py's cluster transactions support WATCH).

Items are timed by the file's capture time (`streams.batching.item_time`; the observation time
when the capture time lies in the future), so an event's window is when its pictures were taken;
the timer runs on the camera's clock (`OpenBatch.camera_now`).

Tracing: the open-batch state also keeps each member's `traceparent` and `observed_at`. A closed
batch starts a trace of its own: the `batch` span (from the batch's first item to its close)
links to the trace of each of its files, and its `traceparent` goes into the `batch.closed`
headers, with the earliest `observed_at` of its files (for the end-to-end latency); see
`streams.tracing`. The detections themselves get no per-entry span here, only metrics.

The common case in one round trip. The WATCH/MULTI takes four (WATCH, GET, XPENDING, EXEC) and
decodes the state each time. A stage that stored the state last keeps it in memory with the
SHA-1 of what it stored, works out the new state from that, and sends the outcome as one script
(`_ADVANCE`) that applies it only if the stored state still has that digest and every entry is
still pending in the group — the same checks the WATCH and the XPENDING make, made atomically
inside the script; then it acknowledges the entries, writes the closed batches and stores the
new state. If either check fails (another worker, the timer or a reclaim changed something) the
script writes nothing and the stage takes the WATCH/MULTI path on what Redis holds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.trace import Link, Span
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import WatchError

from streams import trusted
from streams.batching import (
    BatchConfig,
    Closed,
    DetectionItem,
    OpenBatch,
    decide,
    item_time,
    tick,
)
from streams.clock import epoch_now
from streams.confirmation import Confirmation, confirmed
from streams.contract import HandlerResult, StreamEntry
from streams.envelope import HEADER_TRACEPARENT, entry_fields_and_headers
from streams.groups import POSITION_LUA, position_of
from streams.names import Group, StreamNames
from streams.replies import id_key, reply_text
from streams.schemas import (
    BatchClosed,
    BatchDetection,
    DetectionCompleted,
    DetectionFailed,
    Entry,
)
from streams.stages.loop import EntryBatch, EntryVerdict, Headers, StageLoop
from streams.stages.outcome import Outcome
from streams.tracing import (
    ATTR_CAMERA,
    ATTR_ENTRY_ID,
    ATTR_STREAM,
    HEADER_OBSERVED_AT,
    OK,
    StageTelemetry,
    end_span,
    link_to,
    resolve,
    root_span,
    traceparent_of,
)
from streams.transactions import transaction

logger = logging.getLogger("hsi.batch")
_PENDING_PAGE = 1000

# KEYS[1]: the open-batch state, KEYS[2]: the detections stream, KEYS[3]: the batches stream.
# ARGV[1]: the SHA-1 of the state it was worked out from ('' when there was none); ARGV[2]: the
# group; ARGV[3]: the number n of entries; ARGV[4..3+n]: their ids; then the new state ('' to
# delete it), the number of batches, and per batch the number of its field/value items and them.
# Returns the new batch entry ids and where the group then stands on the detections stream
# (`streams.groups.POSITION_LUA`), or false (nothing written) when a check fails.
_ADVANCE = (
    POSITION_LUA
    + """
local current = redis.call('GET', KEYS[1])
local digest = ''
if current then digest = redis.sha1hex(current) end
if digest ~= ARGV[1] then return false end
local n = tonumber(ARGV[3])
for i = 1, n do
  local id = ARGV[3 + i]
  if #redis.call('XPENDING', KEYS[2], ARGV[2], id, id, 1) == 0 then return false end
end
if n > 0 then redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 4, 3 + n)) end
local at = 4 + n
if ARGV[at] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[at]) end
local m = tonumber(ARGV[at + 1])
at = at + 2
local ids = {}
for k = 1, m do
  local count = tonumber(ARGV[at])
  ids[k] = redis.call('XADD', KEYS[3], '*', unpack(ARGV, at + 1, at + count))
  at = at + 1 + count
end
return {ids, position(KEYS[2], ARGV[2])}
"""
)
_ADVANCE_SCRIPT = AsyncScript(None, _ADVANCE.encode())  # type: ignore[arg-type]  # no client


def _digest(raw: bytes | None) -> str:
    return "" if raw is None else hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class _Member:
    """A detection with objects, as it joins the open batch."""

    detection: BatchDetection
    traceparent: str | None
    observed_at: float  # epoch seconds


class _State:
    """The open batch and the detections it holds, as stored in Redis."""

    def __init__(self, batch: OpenBatch | None, members: dict[str, _Member]) -> None:
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
            arrived_at=batch_data.get("arrived_at"),  # a state stored before has none
        )
        # `traces` and `observed` came with tracing: a state stored before has neither.
        traces: dict[str, str] = data.get("traces") or {}
        observed: dict[str, float] = data.get("observed") or {}
        members = {}
        for raw_member in data["members"]:
            detection = BatchDetection.model_validate(raw_member)
            entry_id = detection.entry_id
            members[entry_id] = _Member(
                detection, traces.get(entry_id), observed.get(entry_id, batch.started_at)
            )
        return cls(batch, members)

    def dump(self) -> bytes | None:
        if self.batch is None:
            return None
        kept = [self.members[i] for i in self.batch.entry_ids if i in self.members]
        return orjson.dumps(
            {
                "batch": asdict(self.batch),
                "members": [m.detection.model_dump(mode="json") for m in kept],
                "traces": {
                    m.detection.entry_id: m.traceparent for m in kept if m.traceparent is not None
                },
                "observed": {m.detection.entry_id: m.observed_at for m in kept},
            }
        )


@dataclass
class _Closing:
    """A batch being closed: its entry, and its span until the MULTI has run."""

    close: Closed
    members: list[_Member]
    span: Span
    # The entry and every header `_emit` wrote, for `streams.trusted` once its id is known.
    written: tuple[BatchClosed, dict[str, str]] | None = None


class BatchStage:
    """The batch handler of group `batch`, and the timer that closes idle batches."""

    group = Group.BATCH

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        names: StreamNames,
        config: BatchConfig,
        clock: Callable[[], float] = epoch_now,
        telemetry: StageTelemetry | None = None,
        confirmation: Confirmation | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        self._config = config
        self._confirmation = confirmation or Confirmation()
        self._clock = clock
        self._telemetry = telemetry
        # camera → (digest of the state this stage stored last, that state): see the module doc.
        self._stored: dict[str, tuple[str, _State]] = {}
        # Every entry of the detections stream is an item (one without objects too: it moves
        # the camera's clock on); the detections get no span of their own, only metrics.
        self._loop: StageLoop[Entry] = StageLoop(
            redis=redis,
            names=names,
            group=self.group,
            accepts=None,
            telemetry=telemetry,
            spans=False,
        )

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        items: list[tuple[DetectionItem, _Member | None]] = []

        async def admit(
            batch: EntryBatch, entry_id: str, entry: Entry, headers: Headers
        ) -> EntryVerdict:
            items.append(self._item(batch.camera, entry_id, entry, headers))
            return EntryVerdict(OK)

        async def apply(batch: EntryBatch, outcome: Outcome) -> None:
            await self._apply(batch.telemetry, batch.camera, stream, items, outcome)

        handled = await self._loop.run(stream, entries, admit, apply)
        return handled.result

    def _item(
        self, camera: str, entry_id: str, entry: Entry, headers: Headers
    ) -> tuple[DetectionItem, _Member | None]:
        """The batching item of an entry of the detections stream, and the member it adds to the
        open batch (a detection with objects)."""
        at = (
            item_time(entry.captured_at.timestamp(), entry.observed_at.timestamp(), self._config)
            if isinstance(entry, DetectionCompleted | DetectionFailed)
            else self._clock()
        )
        if not (isinstance(entry, DetectionCompleted) and entry.objects):
            return DetectionItem(entry_id, camera, at, ()), None
        member = BatchDetection(
            entry_id=entry_id,
            file_entry_id=entry.file_entry_id,
            path=entry.path,
            captured_at=entry.captured_at,
            objects=entry.objects,
        )
        hits = tuple((o.label, o.confidence) for o in entry.objects)
        trace = headers.get(HEADER_TRACEPARENT)
        return (
            DetectionItem(entry_id, camera, at, hits),
            _Member(member, None if trace is None else str(trace), entry.observed_at.timestamp()),
        )

    async def _apply(
        self,
        telemetry: StageTelemetry,
        camera: str,
        stream: str,
        items: Sequence[tuple[DetectionItem, _Member | None]],
        outcome: Outcome,
    ) -> None:
        key = self._names.open_batch(camera)
        done = outcome.done
        if await self._advance_stored(telemetry, camera, stream, items, outcome):
            return
        async with transaction(self._redis) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    state = _State.load(await pipe.get(key))
                    # Another batch consumer may have taken some of these entries already (a
                    # reclaim while this one was slow): it changed the state key when it acked
                    # them, so the WATCH makes this check and the MULTI below one atomic step.
                    pending = await _pending_among(pipe, stream, self.group.value, done)
                    closed = self._advance(state, items, set(pending))
                    # Spans of an attempt lost to a WATCH race are never ended, so never exported.
                    closing = [
                        self._start_span(telemetry, camera, stream, close, self._confirm(members))
                        for close, members in closed
                    ]
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    for batch in closing:
                        self._emit(pipe, camera, batch)
                    raw = self._store(pipe, key, state)
                    if pending:
                        pipe.xack(stream, self.group.value, *pending)
                    results = await pipe.execute()
                    self._stored[camera] = (_digest(raw), state)
                    self._closed(telemetry, camera, closing, results)
                    if len(pending) < len(done):
                        logger.info(
                            "commit.duplicate_skipped",
                            extra={
                                "stream": stream,
                                "group": self.group.value,
                                "entries": len(done) - len(pending),
                            },
                        )
                    return
                except WatchError:
                    continue

    def _advance(
        self,
        state: _State,
        items: Sequence[tuple[DetectionItem, _Member | None]],
        pending: set[str],
    ) -> list[tuple[Closed, list[_Member]]]:
        """Decide each pending item on `state` (changed in place); the batches it closed."""
        closed: list[tuple[Closed, list[_Member]]] = []
        now = self._clock()
        for item, member in items:
            if item.entry_id not in pending:
                continue
            decision = decide(state.batch, item, now, self._config)
            if member is not None:
                state.members[item.entry_id] = member
            for close in decision.closed:
                members = [
                    state.members.pop(i) for i in close.batch.entry_ids if i in state.members
                ]
                closed.append((close, members))
            state.batch = decision.open_batch
        return closed

    async def _advance_stored(
        self,
        telemetry: StageTelemetry,
        camera: str,
        stream: str,
        items: Sequence[tuple[DetectionItem, _Member | None]],
        outcome: Outcome,
    ) -> bool:
        """The one-round-trip path (module doc): False when it wrote nothing. The group's
        position after it is left in `outcome.position`."""
        done = outcome.done
        stored = self._stored.pop(camera, None)
        if stored is None or not done:
            return False
        digest, previous = stored
        state = _State(previous.batch, dict(previous.members))
        closed = self._advance(state, items, set(done))
        closing = [
            self._start_span(telemetry, camera, stream, close, self._confirm(members))
            for close, members in closed
        ]
        raw = state.dump()
        batches = [fields for batch in closing if (fields := self._entry_fields(camera, batch))]
        args: list[Any] = [digest, self.group.value, len(done), *done, raw or b"", len(batches)]
        for fields in batches:
            args += [len(fields) * 2, *(item for pair in fields.items() for item in pair)]
        keys = [self._names.open_batch(camera), stream, self._names.batches(camera)]
        reply = await _ADVANCE_SCRIPT(keys, args, client=self._redis)
        if reply is None:
            return False  # spans of this attempt are never ended, so never exported
        results, position = reply
        outcome.position = position_of(position)
        self._stored[camera] = (_digest(raw), state)
        self._closed(telemetry, camera, closing, results)
        return True

    async def tick_camera(self, camera: str) -> bool:
        """Close the camera's open batch when its idle or window deadline has passed."""
        key = self._names.open_batch(camera)
        telemetry = resolve(self._telemetry)
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
                    batch = self._start_span(
                        telemetry,
                        camera,
                        self._names.detections(camera),
                        close,
                        self._confirm(members),
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    self._emit(pipe, camera, batch)
                    pipe.delete(key)
                    self._stored.pop(camera, None)
                    results = await pipe.execute()
                    self._closed(telemetry, camera, [batch], results)
                    return True
                except WatchError:
                    continue

    def _store(self, pipe: Any, key: str, state: _State) -> bytes | None:
        raw = state.dump()
        if raw is None:
            pipe.delete(key)
        else:
            pipe.set(key, raw)
        return raw

    def _start_span(
        self,
        telemetry: StageTelemetry,
        camera: str,
        stream: str,
        close: Closed,
        members: list[_Member],
    ) -> _Closing:
        """The `batch` span: a new trace (the event's), linked to each file's trace."""
        links = [link for link in (link_to(m.traceparent) for m in members) if link is not None]
        span = root_span(
            telemetry,
            self.group.value,
            links=_unique(links),
            start_time=min(close.batch.started_at, time.time()),
            attributes={
                ATTR_CAMERA: camera,
                ATTR_STREAM: stream,
                "hsi.batch_id": close.batch.batch_id,
                "hsi.close_reason": close.reason.value,
                "hsi.detection_count": close.batch.detection_count,
                "hsi.file_count": len(members),
            },
        )
        return _Closing(close, members, span)

    def _confirm(self, members: list[_Member]) -> list[_Member]:
        """The members with the objects the batch confirms (`streams.confirmation`)."""
        kept = {
            d.entry_id: d for d in confirmed([m.detection for m in members], self._confirmation)
        }
        return [
            replace(m, detection=kept[m.detection.entry_id])
            for m in members
            if m.detection.entry_id in kept
        ]

    def _emit(self, pipe: Any, camera: str, closing: _Closing) -> None:
        """XADD the batch, unless no object of it was confirmed (then it makes no event)."""
        fields = self._entry_fields(camera, closing)
        if fields is not None:
            pipe.xadd(self._names.batches(camera), fields)

    def _entry_fields(self, camera: str, closing: _Closing) -> dict[bytes, bytes] | None:
        """The batch's `batch.closed` entry fields; None when no object of it was confirmed."""
        batch = closing.close.batch
        members = closing.members
        if not members:
            return None
        objects = [o for m in members for o in m.detection.objects]
        delay = min(m.observed_at - m.detection.captured_at.timestamp() for m in members)
        entry = BatchClosed(
            camera_id=camera,
            batch_id=batch.batch_id,
            detections=tuple(m.detection for m in members),
            window_start=_moment(batch.started_at),
            window_end=_moment(batch.last_at),
            close_reason=closing.close.reason.value,
            detection_count=len(objects),
            object_types=tuple(sorted({o.label for o in objects})),
            max_confidence=round(max(o.confidence for o in objects), 4),
            fast_path=closing.close.reason.value == "fast_path",
            closed_at=_moment(closing.close.closed_at),
            arrival_delay_seconds=round(max(0.0, delay), 1),
        )
        headers: dict[str, str] = {}
        traceparent = traceparent_of(closing.span)
        if traceparent is None:  # tracing is off: carry a member's trace on, as before
            traceparent = next((m.traceparent for m in members if m.traceparent), None)
        if traceparent:
            headers[HEADER_TRACEPARENT] = traceparent
        if members:
            headers[HEADER_OBSERVED_AT] = _moment(min(m.observed_at for m in members)).isoformat()
        fields, full = entry_fields_and_headers(entry, headers)
        closing.written = (entry, full)
        return fields

    def _closed(
        self,
        telemetry: StageTelemetry,
        camera: str,
        closing: list[_Closing],
        results: list[Any],
    ) -> None:
        """After the MULTI: end the batch spans (named by their new entry ids), count, log."""
        replies = iter(results)  # one XADD reply per batch `_emit` wrote, in order
        for batch in closing:
            close = batch.close
            if not batch.members:
                end_span(batch.span, OK)
                logger.info(
                    "batch.unconfirmed",
                    extra={"camera": camera, "batch_id": close.batch.batch_id},
                )
                continue
            entry_id = next(replies, None)
            if isinstance(entry_id, bytes | str):
                batch.span.set_attribute(ATTR_ENTRY_ID, reply_text(entry_id))
                if batch.written is not None:  # handed to this process's readers as written
                    trusted.remember(
                        self._names.batches(camera), reply_text(entry_id), *batch.written
                    )
            end_span(batch.span, OK)
            telemetry.instruments.batch_size.record(
                close.batch.detection_count, {"camera": camera, "reason": close.reason.value}
            )
            logger.info(
                "batch.closed",
                extra={
                    "camera": camera,
                    "batch_id": close.batch.batch_id,
                    "reason": close.reason.value,
                    "detections": close.batch.detection_count,
                },
            )


def _unique(links: list[Link]) -> list[Link]:
    """One link per linked span (a file's detection may be offered to a batch twice)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for link in links:
        key = (link.context.trace_id, link.context.span_id)
        if key not in seen:
            seen.add(key)
            out.append(link)
    return out


async def _pending_among(pipe: Any, stream: str, group: str, ids: Sequence[str]) -> list[str]:
    """Those of `ids` (in order) still pending in `group`: XPENDING pages over their id range."""
    if not ids:
        return []
    start, last = min(ids, key=id_key), max(ids, key=id_key)
    found: set[str] = set()
    while True:
        rows = await pipe.xpending_range(stream, group, start, last, count=_PENDING_PAGE)
        found.update(reply_text(row["message_id"]) for row in rows)
        if len(rows) < _PENDING_PAGE:
            return [entry_id for entry_id in ids if entry_id in found]
        start = "(" + reply_text(rows[-1]["message_id"])

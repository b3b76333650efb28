"""The live feed: Server-Sent Events of new batches and analyses of every camera.

Each connection has its own Redis client (one connection) for its blocking XREAD, so live
viewers never hold the shared pool. It reads — without a consumer group, it is only a view — the
batches and analyses streams of every camera in the camera set (refreshed after every read; a
camera that appears later is read from its beginning), and sends

    id: front_door|batches|1767225600000-0
    event: batch
    data: {...}

`id` is `<camera>|<stream kind>|<entry id>`; a browser sends the last one back as
`Last-Event-ID` when it reconnects (or pass `?last_event_id=`). Resuming starts that stream just
after the entry and every other stream at the entry's millisecond: nothing later is missed, and
an entry of another stream written in that same millisecond may be sent twice (ids make
duplicates recognisable). Without an id the feed starts at the streams' current ends (`$`).

A comment line is sent every heartbeat; the connection is closed when no event was sent for the
idle timeout (the browser reconnects with its last id). Redis unreachable at the start is a 503;
Redis lost later ends the stream with a comment saying so (the browser reconnects likewise) once
the client's retries are spent. A lost connection to a Redis still there is not a loss: redis-py
replaces it (by its retry policy, or in the pool when the connection was idle) and the feed, which
keeps its positions itself, goes on without missing or repeating an entry.
Entries go out in id (time) order across streams (`merge_in_order`). On one server a single
blocking XREAD covers every stream; on a Redis Cluster one command may not span cameras (slots),
so each round is one non-blocking XREAD per camera in a pipeline, with a pause of the block time
when nothing came.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import anyio
import orjson
from redis.asyncio import RedisCluster
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from hsi.api import links
from hsi.api.config import LiveConfig
from hsi.api.queries.streams import camera_ids
from hsi.api.responses import REDIS_ERRORS, error_response, unavailable
from hsi.api.security import ConnectionSlots, Refusal
from hsi.infra.redis import RedisClient, RedisConfig, create_redis
from hsi.logs.setup import log_event
from streams.envelope import read_fields
from streams.names import StreamKind, StreamNames, is_camera_id
from streams.schemas import EntryError

log = logging.getLogger("hsi.api.live")

LIVE_KINDS: dict[StreamKind, str] = {StreamKind.BATCHES: "batch", StreamKind.ANALYSES: "analysis"}
_ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_MAX_SEQ = 2**64 - 1
T = TypeVar("T")
RETRY_MS = 3000


@dataclass(frozen=True)
class LiveId:
    camera: str
    kind: StreamKind
    entry_id: str

    def __str__(self) -> str:
        return f"{self.camera}|{self.kind.value}|{self.entry_id}"


def parse_live_id(text: str) -> LiveId | None:
    """`front_door|batches|1767225600000-0` → LiveId, or None when it is not one of ours."""
    parts = text.strip().split("|")
    if len(parts) != 3:
        return None
    camera, kind, entry_id = parts
    if not is_camera_id(camera) or not _ENTRY_ID.match(entry_id):
        return None
    live_kind = next((k for k in LIVE_KINDS if k.value == kind), None)
    if live_kind is None:
        return None
    return LiveId(camera, live_kind, entry_id)


def id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def resume_positions(
    keys: Mapping[str, tuple[str, StreamKind]],
    names: StreamNames,
    tails: Mapping[str, str],
    resume: LiveId | None,
) -> dict[str, str]:
    """The exclusive XREAD start of every stream (see the module docstring)."""
    if resume is None:
        return {key: tails.get(key, "0-0") for key in keys}
    resumed_key = names.stream(resume.camera, resume.kind)
    ms, _ = id_order(resume.entry_id)
    before_ms = f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"
    return {key: resume.entry_id if key == resumed_key else before_ms for key in keys}


def live_keys(names: StreamNames, cameras: Iterable[str]) -> dict[str, tuple[str, StreamKind]]:
    return {names.stream(c, kind): (c, kind) for c in cameras for kind in LIVE_KINDS}


def entry_payload(
    camera: str, kind: StreamKind, entry_id: str, fields: Mapping[bytes, bytes]
) -> dict[str, Any] | None:
    """The `data` of an event, or None when the entry is not readable."""
    try:
        entry, _ = read_fields(fields)
    except (EntryError, ValueError):
        return None
    body = entry.model_dump(mode="json")
    if kind is StreamKind.BATCHES:
        body["files"] = len(body.pop("detections", ()))
    batch_id = body.get("batch_id")
    body.update(
        {
            "camera_id": camera,
            "stream": kind.value,
            "entry_id": entry_id,
            "event_url": None if batch_id is None else links.event_url(batch_id),
        }
    )
    return body


def merge_in_order(
    batches: Mapping[str, Sequence[tuple[str, T]]], count: int
) -> list[tuple[str, str, T]]:
    """The entries of one XREAD reply (per stream, up to `count` each) as (key, id, fields) in id
    order across streams. A stream that returned `count` entries may hold more, older than what
    other streams returned: nothing later than the smallest last id of such a full stream is
    taken now (it is read again next time), so ids go out in time order and resuming from the
    last one (see `resume_positions`) skips nothing."""
    full = [id_order(entries[-1][0]) for entries in batches.values() if len(entries) >= count]
    cutoff = min(full) if full else None
    merged = sorted(
        (
            (id_order(entry_id), key, entry_id, fields)
            for key, entries in batches.items()
            for entry_id, fields in entries
        ),
        key=lambda item: (item[0], item[1]),
    )
    return [(key, i, f) for order, key, i, f in merged if cutoff is None or order <= cutoff]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sse_event(live_id: LiveId, data: Mapping[str, Any]) -> bytes:
    return (
        f"id: {live_id}\nevent: {LIVE_KINDS[live_id.kind]}\ndata: ".encode()
        + orjson.dumps(data)
        + b"\n\n"
    )


def sse_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


class LiveFeed(Response):
    """The ASGI response of one live connection (acquires and releases its connection slot)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        *,
        redis: RedisConfig,
        names: StreamNames,
        config: LiveConfig,
        slots: ConnectionSlots,
        client: str,
        resume: LiveId | None,
    ) -> None:
        super().__init__()
        self.redis_config = replace(
            redis, max_connections=1, socket_timeout=config.block_ms / 1000 + 10
        )
        self.names = names
        self.config = config
        self.slots = slots
        self.client = client
        self.resume = resume

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.slots.acquire(self.client)
        if refusal is not None:
            await self._refuse(refusal, scope, receive, send)
            return
        redis = create_redis(self.redis_config)
        try:
            try:
                keys = live_keys(self.names, await camera_ids(redis, self.names))
                positions = resume_positions(
                    keys, self.names, await _tails(redis, list(keys)), self.resume
                )
            except REDIS_ERRORS as exc:  # before the 200: the client gets a plain 503
                await unavailable("Redis", "REDIS_URL", exc)(scope, receive, send)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            if scope.get("method") != "HEAD":
                async with anyio.create_task_group() as group:

                    async def stream() -> None:
                        await self._stream(redis, send, keys, positions)
                        group.cancel_scope.cancel()

                    group.start_soon(stream)
                    await _wait_for_disconnect(receive)
                    group.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # The task group cancels the stream on disconnect, and anyio cancels every await in
            # a cancelled scope: shield the close, or the connection would be left open.
            with anyio.CancelScope(shield=True):
                await redis.aclose()
            self.slots.release(self.client)

    async def _refuse(self, refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
        if refusal is Refusal.TOO_MANY_FOR_CLIENT:
            response = error_response(
                429,
                f"too many live connections from this client (at most "
                f"{self.slots.max_per_client}); close one first",
                headers={"Retry-After": "5"},
            )
        else:
            response = error_response(
                503,
                f"the live feed is full ({self.slots.max_total} connections); retry later",
                headers={"Retry-After": "5"},
            )
        await response(scope, receive, send)

    async def _stream(
        self,
        redis: RedisClient,
        send: Send,
        keys: dict[str, tuple[str, StreamKind]],
        positions: dict[str, str],
    ) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        try:
            await self._run(redis, write, keys, positions)
        except REDIS_ERRORS as exc:  # after the 200: end the stream, the browser reconnects
            log_event(log, "api.live_redis_lost", level=logging.WARNING, error=type(exc).__name__)
            await write(sse_comment("redis unavailable; reconnect with Last-Event-ID"))

    async def _run(
        self,
        redis: RedisClient,
        write: Callable[[bytes], Awaitable[None]],
        keys: dict[str, tuple[str, StreamKind]],
        positions: dict[str, str],
    ) -> None:
        await write(f"retry: {RETRY_MS}\n".encode() + sse_comment("connected"))
        last_event = last_write = time.monotonic()
        while time.monotonic() - last_event < self.config.idle_timeout_seconds:
            reply = await self._read(redis, positions, keys)
            batches = {
                _text(raw_key): [(_text(raw_id), fields) for raw_id, fields in entries]
                for raw_key, entries in reply
            }
            frames = []
            for key, entry_id, fields in merge_in_order(batches, self.config.read_count):
                positions[key] = entry_id
                camera, kind = keys[key]
                payload = entry_payload(camera, kind, entry_id, fields)
                if payload is None:
                    log_event(log, "api.live_unreadable_entry", stream=key, entry=entry_id)
                    continue
                frames.append((LiveId(camera, kind, entry_id), payload))
            now = time.monotonic()
            if frames:
                await write(b"".join(sse_event(live_id, data) for live_id, data in frames))
                last_event = last_write = now
            elif now - last_write >= self.config.heartbeat_seconds:
                await write(sse_comment("heartbeat"))
                last_write = now
            for key, spot in live_keys(self.names, await camera_ids(redis, self.names)).items():
                if key not in keys:
                    keys[key] = spot
                    positions[key] = "0-0"
        await write(sse_comment("idle timeout; reconnect with Last-Event-ID"))

    async def _read(
        self, redis: RedisClient, positions: dict[str, str], keys: Mapping[str, tuple[str, Any]]
    ) -> list[Any]:
        """One XREAD over every stream: blocking on one server; on a cluster, where one command
        may not span slots (cameras) and a blocking read per camera would need a connection
        each, one non-blocking XREAD per camera in a pipeline, then a pause when all were empty."""
        pause = self.config.block_ms / 1000
        if not positions:
            await anyio.sleep(pause)
            return []
        if not isinstance(redis, RedisCluster):
            reply: Any = await redis.xread(
                cast("Any", positions), count=self.config.read_count, block=self.config.block_ms
            )
            return list(reply or [])
        per_camera: dict[str, dict[str, str]] = {}
        for key, position in positions.items():
            per_camera.setdefault(keys[key][0], {})[key] = position
        pipe = redis.pipeline(transaction=False)
        for streams in per_camera.values():
            pipe.xread(cast("Any", streams), count=self.config.read_count)
        merged = [item for part in await pipe.execute() if part for item in part]
        if not merged:
            await anyio.sleep(pause)
        return merged


async def _tails(redis: RedisClient, keys: list[str]) -> dict[str, str]:
    """The last entry id of each stream (streams that do not exist yet are left out)."""
    if not keys:
        return {}
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.xrevrange(key, count=1)
    tails = {}
    for key, last in zip(keys, await pipe.execute(), strict=True):
        if last:
            raw = last[0][0]
            tails[key] = raw.decode() if isinstance(raw, bytes) else str(raw)
    return tails


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return

"""The watch stage's Redis writes: publish a file once per content hash, register cameras.

Dedupe and publish are one Lua script (`PUBLISH_ONCE`): if the camera's `seen` marker for the
hash exists, nothing is written and the entry id it holds is returned; else the `file.observed`
entry is added to the camera's files stream and the marker is set to its id with the dedupe TTL.
Redis runs a script atomically and persists and replicates its effects as one unit, so there is
no window in which a crash leaves a marker without its entry (a file lost for the TTL) or an
entry without its marker (a duplicate later). Both keys carry the camera's hash tag, so the
script stays in one slot and runs unchanged on Redis Cluster.

Files published at the same time go to Redis together: `publish_once` queues its script call and
the first caller's flush sends every queued call in one non-transactional pipeline of `EVAL`s
(one round trip for up to `PIPELINE_MAX` files), then resolves each caller with its own reply.
Each script still runs atomically on its own, so the once-only guarantee is the script's, as
before; a pipeline only saves round trips and the client's per-command work. A lone file is sent
at once (the flush starts on the next turn of the event loop, no timer). `EVAL` carries the
script's text rather than its hash, so a server that lost its script cache (a restart, a
failover, a new cluster node) needs no `NOSCRIPT` retry inside a pipeline.

Camera registration spans two keys in different slots (`camera_set` and the shared `cameras`
stream), so it cannot be one script on a cluster. It is ordered for at-least-once:
`SISMEMBER` → `XADD camera.registered` → `SADD`. A crash between XADD and SADD re-registers the
camera after a restart (a duplicate `camera.registered`, which readers treat as an upsert by
camera id); the opposite order could lose the registration for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster

from streams import trusted
from streams.envelope import entry_fields, entry_fields_and_headers
from streams.names import StreamNames
from streams.replies import reply_text
from streams.schemas import CameraRegistered, FileObserved

PIPELINE_MAX = 256  # script calls sent in one pipeline at most

PUBLISH_ONCE = """
-- KEYS[1]: dedupe marker, KEYS[2]: files stream (same slot: both carry the camera's hash tag)
-- ARGV[1]: TTL in seconds; ARGV[2..]: the entry's field/value pairs
local first = redis.call('GET', KEYS[1])
if first then
  return {0, first}
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
"""


@dataclass(frozen=True, slots=True)
class Published:
    """The result of `Ledger.publish_once`."""

    new: bool  # False: a duplicate, nothing was written
    entry_id: str  # the new entry's id, or the first one's for a duplicate


def _stopped(exc: BaseException) -> Exception:
    return ConnectionError(f"publishing stopped: {type(exc).__name__}")


class Ledger:
    """Publishes `file.observed` entries once per camera and content hash."""

    def __init__(self, client: Redis | RedisCluster, names: StreamNames, dedupe_ttl: int) -> None:
        self._client = client
        self._names = names
        self._ttl = dedupe_ttl
        self._queued: list[tuple[list[str], list[bytes | str | int], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._known: set[str] = set()
        self._folders: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def publish_once(
        self, entry: FileObserved, headers: Mapping[str, str] | None = None
    ) -> Published:
        """Add the entry unless the camera already saw its hash within the TTL (atomic)."""
        fields, full = entry_fields_and_headers(entry, headers)
        args: list[bytes | str | int] = [self._ttl]
        for field, value in fields.items():
            args += [field, value]
        keys = [
            self._names.seen(entry.camera_id, entry.sha256),
            self._names.files(entry.camera_id),
        ]
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((keys, args, reply))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        new, entry_id = await reply
        published = Published(new=bool(int(new)), entry_id=reply_text(entry_id))
        if published.new:  # handed to this process's detect stage without decoding it
            trusted.remember(keys[1], published.entry_id, entry, full)
        return published

    async def _flush(self) -> None:
        """Send the queued script calls, `PIPELINE_MAX` at a time, until none is left."""
        while self._queued:
            calls, self._queued = self._queued[:PIPELINE_MAX], self._queued[PIPELINE_MAX:]
            try:
                pipe = self._client.pipeline(transaction=False)
                for keys, args, _ in calls:
                    pipe.execute_command("EVAL", PUBLISH_ONCE, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            except BaseException as exc:  # the connection, or this task cancelled: tell all
                for _, _, reply in calls:
                    if not reply.done():
                        reply.set_exception(exc if isinstance(exc, Exception) else _stopped(exc))
                if not isinstance(exc, Exception):
                    for _, _, reply in self._queued:
                        if not reply.done():
                            reply.set_exception(_stopped(exc))
                    self._queued = []
                    raise
                continue
            for (_, _, reply), result in zip(calls, replies, strict=True):
                if reply.done():  # its caller was cancelled
                    continue
                if isinstance(result, Exception):
                    reply.set_exception(result)
                else:
                    reply.set_result(result)

    async def folder_of(self, camera: str, folder: str) -> str:
        """The folder that owns `camera`'s id: `folder` when it is the first to claim it."""
        owner = self._folders.get(camera)
        if owner is None:
            await self._client.hsetnx(self._names.camera_folders, camera, folder)
            found = await self._client.hget(self._names.camera_folders, camera)
            owner = reply_text(found) if found is not None else folder
            self._folders[camera] = owner
        return owner

    async def register_camera(
        self, entry: CameraRegistered, headers: Mapping[str, str] | None = None
    ) -> str | None:
        """Register the camera unless it is known; the new entry's id, or None when known."""
        camera = entry.camera_id
        if camera in self._known:
            return None
        lock = self._locks.setdefault(camera, asyncio.Lock())
        async with lock:
            if camera in self._known:
                return None
            if await self._client.sismember(self._names.camera_set, camera):
                self._known.add(camera)
                return None
            fields = entry_fields(entry, headers)
            entry_id = await self._client.xadd(
                self._names.cameras, {k: v for k, v in fields.items()}
            )
            await self._client.sadd(self._names.camera_set, camera)
            self._known.add(camera)
            return reply_text(entry_id)

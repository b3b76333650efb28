"""The watch stage's Redis writes: publish a file once per content hash, register cameras.

Dedupe and publish are one Lua script (`PUBLISH_ONCE`): if the camera's `seen` marker for the
hash exists, nothing is written and the entry id it holds is returned; else the `file.observed`
entry is added to the camera's files stream and the marker is set to its id with the dedupe TTL.
Redis runs a script atomically and persists and replicates its effects as one unit, so there is
no window in which a crash leaves a marker without its entry (a file lost for the TTL) or an
entry without its marker (a duplicate later). Both keys carry the camera's hash tag, so the
script stays in one slot and runs unchanged on Redis Cluster.

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

from redis.asyncio import Redis, RedisCluster

from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.replies import reply_text
from streams.schemas import CameraRegistered, FileObserved

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


class Ledger:
    """Publishes `file.observed` entries once per camera and content hash."""

    def __init__(self, client: Redis | RedisCluster, names: StreamNames, dedupe_ttl: int) -> None:
        self._client = client
        self._names = names
        self._ttl = dedupe_ttl
        self._script = client.register_script(PUBLISH_ONCE)
        self._known: set[str] = set()
        self._folders: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def publish_once(
        self, entry: FileObserved, headers: Mapping[str, str] | None = None
    ) -> Published:
        """Add the entry unless the camera already saw its hash within the TTL (atomic)."""
        fields = entry_fields(entry, headers)
        args: list[bytes | str | int] = [self._ttl]
        for field, value in fields.items():
            args += [field, value]
        keys = [
            self._names.seen(entry.camera_id, entry.sha256),
            self._names.files(entry.camera_id),
        ]
        new, entry_id = await self._script(keys=keys, args=args)
        return Published(new=bool(int(new)), entry_id=reply_text(entry_id))

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

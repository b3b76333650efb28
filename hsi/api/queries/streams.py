"""Stream and consumer-group health from Redis: length, last id, per-group lag and pending, the
oldest pending entry, dead letters. Cameras come from the camera set (`names.camera_set`).

Two pipelined round trips for all cameras: XINFO STREAM + XINFO GROUPS per stream, then
XPENDING (range, count 1) per group that has pending entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from streams.names import PROJECTED, Group, StreamKind, StreamNames, is_camera_id

if TYPE_CHECKING:
    from hsi.infra.redis import RedisClient

KINDS: tuple[StreamKind, ...] = tuple(StreamKind)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def camera_ids(redis: RedisClient, names: StreamNames) -> list[str]:
    members = await redis.smembers(names.camera_set)
    found = {_text(m) or "" for m in members}
    return sorted(c for c in found if is_camera_id(c))


@dataclass(frozen=True)
class GroupHealth:
    name: str
    consumers: int
    pending: int
    lag: int | None  # None: Redis cannot tell (entries deleted in between)
    last_delivered_id: str | None
    oldest_pending_id: str | None = None
    oldest_pending_idle_ms: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "consumers": self.consumers,
            "pending": self.pending,
            "lag": self.lag,
            "last_delivered_id": self.last_delivered_id,
            "oldest_pending_id": self.oldest_pending_id,
            "oldest_pending_idle_ms": self.oldest_pending_idle_ms,
        }


@dataclass(frozen=True)
class StreamHealth:
    camera_id: str
    kind: StreamKind
    key: str
    exists: bool
    length: int
    first_id: str | None
    last_id: str | None
    groups: tuple[GroupHealth, ...]

    def group(self, name: str) -> GroupHealth | None:
        return next((g for g in self.groups if g.name == name), None)

    def body(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "key": self.key,
            "exists": self.exists,
            "length": self.length,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "groups": [g.body() for g in self.groups],
        }


async def stream_health(
    redis: RedisClient,
    names: StreamNames,
    cameras: list[str],
    kinds: tuple[StreamKind, ...] = KINDS,
) -> list[StreamHealth]:
    keys = [(camera, kind, names.stream(camera, kind)) for camera in cameras for kind in kinds]
    if not keys:
        return []
    pipe = redis.pipeline(transaction=False)
    for _, _, key in keys:
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
    replies = await pipe.execute(raise_on_error=False)
    infos: list[tuple[str, StreamKind, str, Any, list[dict[str, Any]]]] = []
    for index, (camera, kind, key) in enumerate(keys):
        info, groups = replies[2 * index], replies[2 * index + 1]
        if isinstance(info, ResponseError):
            info, groups = None, []
        elif isinstance(info, Exception):
            raise info
        elif isinstance(groups, Exception):
            raise groups
        infos.append((camera, kind, key, info, groups))

    pending_pipe = redis.pipeline(transaction=False)
    wanted: list[tuple[str, str]] = []
    for _, _, key, _, groups in infos:
        for group in groups:
            if int(group.get("pending") or 0) > 0:
                name = _text(group["name"]) or ""
                pending_pipe.xpending_range(key, name, "-", "+", 1)
                wanted.append((key, name))
    oldest: dict[tuple[str, str], dict[str, Any]] = {}
    if wanted:
        for spot, reply in zip(wanted, await pending_pipe.execute(), strict=True):
            if reply:
                oldest[spot] = reply[0]

    out = []
    for camera, kind, key, info, groups in infos:
        group_health = []
        for group in groups:
            name = _text(group["name"]) or ""
            first = oldest.get((key, name))
            lag = group.get("lag")
            group_health.append(
                GroupHealth(
                    name=name,
                    consumers=int(group.get("consumers") or 0),
                    pending=int(group.get("pending") or 0),
                    lag=None if lag is None else int(lag),
                    last_delivered_id=_text(group.get("last-delivered-id")),
                    oldest_pending_id=None if first is None else _text(first["message_id"]),
                    oldest_pending_idle_ms=(
                        None if first is None else int(first["time_since_delivered"])
                    ),
                )
            )
        out.append(
            StreamHealth(
                camera_id=camera,
                kind=kind,
                key=key,
                exists=info is not None,
                length=0 if info is None else int(info["length"]),
                first_id=None if info is None else _first_id(info),
                last_id=None if info is None else _text(info.get("last-generated-id")),
                groups=tuple(sorted(group_health, key=lambda g: g.name)),
            )
        )
    return out


def _first_id(info: dict[str, Any]) -> str | None:
    first = info.get("first-entry")
    return _text(first[0]) if first else None


def streams_report(health: list[StreamHealth], cameras: list[str]) -> dict[str, Any]:
    """The /api/streams body: per camera its streams and dead-letter count, and totals."""
    per_camera: dict[str, list[StreamHealth]] = {camera: [] for camera in cameras}
    for stream in health:
        per_camera[stream.camera_id].append(stream)
    body = []
    totals = {"length": 0, "pending": 0, "lag": 0, "dead_letters": 0}
    for camera, items in per_camera.items():
        dead = sum(s.length for s in items if s.kind is StreamKind.DEAD)
        totals["dead_letters"] += dead
        for stream in items:
            totals["length"] += stream.length
            for group in stream.groups:
                totals["pending"] += group.pending
                totals["lag"] += group.lag or 0
        body.append(
            {"camera_id": camera, "dead_letters": dead, "streams": [s.body() for s in items]}
        )
    return {"cameras": body, "totals": totals}


@dataclass(frozen=True)
class ProjectorLag:
    lag: int  # entries not yet delivered to group `project`
    pending: int  # delivered, not yet acknowledged
    unknown: int  # streams whose lag Redis cannot tell (counted as 0)
    streams: int

    @property
    def behind(self) -> int:
        return self.lag + self.pending


def projector_lag(health: list[StreamHealth]) -> ProjectorLag:
    """How far group `project` is behind over the projected camera streams; a stream without the
    group yet counts its whole length."""
    lag = pending = unknown = 0
    projected = [s for s in health if s.kind in PROJECTED]
    for stream in projected:
        group = stream.group(Group.PROJECT.value)
        if group is None:
            lag += stream.length
            continue
        pending += group.pending
        if group.lag is None:
            unknown += 1
        else:
            lag += group.lag
    return ProjectorLag(lag=lag, pending=pending, unknown=unknown, streams=len(projected))

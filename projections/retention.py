"""Retention: forget what is older than `retention_days`, in the streams and in the projection.

Streams are trimmed with `XTRIM key MINID <id>` (exact), never MAXLEN: the id is the smallest of
the cutoff (`<cutoff ms>-0`) and, for every consumer group of the stream, its oldest pending entry
and the entry after its last delivered one (`safe_minid`). So nothing a group has not acknowledged
is trimmed, nor anything it has not read yet. A projected stream whose `project` group does not
exist yet is not trimmed at all (its entries were never projected). The shared cameras stream is
never trimmed: registrations are needed for as long as the camera exists; nor are the cameras'
reanalyses streams: a run's row sums its entries, and runs are few (one entry per batch judged).

The projection forgets exactly what can no longer be rebuilt, so that a rebuild after retention
still equals the live projection:

- a row goes when it is older than the cutoff (media files and detections by `captured_at`,
  events by `window_end` — `closed_at`/`analyzed_at` when missing —, dead letters by `dead_at`,
  alerts by `recorded_at`)
  AND every entry it was made of has been trimmed (its entry id is below its stream's MINID); a
  row whose entry is still on the stream (pending for a slow group) stays until a later run;
- event_detections go with their event; an analysis_history row goes when its analysis entry
  was trimmed;
- a tracking row goes when its entry was trimmed (a tracking row of an entry that is still on the
  stream must stay, or a redelivery would apply it twice);
- the camera counters `file_count` / `event_count` drop by the tracked file and batch entries
  trimmed, so they keep counting the entries the streams (and so a rebuild) still hold.

Media files (optional) are deleted for the media rows deleted, confined to the camera root: a
path that leaves the root or goes through a symlink is refused, never followed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.errors import RetentionError
from projections.projector import DEFAULT_PROJECTION
from projections.shadow import live_schema, maintenance_lock
from projections.tables import TABLES, cameras
from streams.logs import log_event
from streams.names import TRIMMED, Group, StreamKind, StreamNames
from streams.paths import PathOutsideRootError, confine
from streams.replies import id_key, reply_text

logger = logging.getLogger("hsi.retention")

_MAX_SEQUENCE: Final = 2**64 - 1
NOTHING: Final = "0-0"  # a MINID that trims nothing


# --- decisions ----------------------------------------------------------------------------------


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def next_id(entry_id: str) -> str:
    """The smallest stream id greater than `entry_id`."""
    milliseconds, sequence = id_key(entry_id)
    if sequence >= _MAX_SEQUENCE:
        return format_id((milliseconds + 1, 0))
    return format_id((milliseconds, sequence + 1))


@dataclass(frozen=True)
class GroupPosition:
    """Where a consumer group stands on a stream (from XINFO GROUPS and the XPENDING summary)."""

    name: str
    last_delivered_id: str
    oldest_pending_id: str | None = None


def safe_minid(cutoff_ms: int, groups_info: Iterable[GroupPosition]) -> str:
    """The MINID to trim a stream with: the cutoff, lowered so that every group keeps its pending
    entries and every entry it has not been delivered yet."""
    bound = (max(0, cutoff_ms), 0)
    for group in groups_info:
        bound = min(bound, id_key(next_id(group.last_delivered_id)))
        if group.oldest_pending_id is not None:
            bound = min(bound, id_key(group.oldest_pending_id))
    return format_id(bound)


def cutoff_of(now: datetime, retention_days: int) -> datetime:
    if retention_days < 1:
        raise ValueError(f"retention_days must be >= 1, got {retention_days}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now - timedelta(days=retention_days)


# --- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTrim:
    """One stream's trim: the MINID used (None when it was not trimmed) and why not."""

    stream: str
    minid: str | None
    trimmed: int = 0
    skipped: str | None = None


@dataclass(frozen=True)
class RetentionReport:
    cutoff: datetime
    streams: tuple[StreamTrim, ...]
    rows: Mapping[str, int]  # table → rows deleted, every table but cameras (never deleted)
    media_deleted: int = 0
    media_missing: int = 0  # media rows deleted whose file was already gone
    media_refused: tuple[str, ...] = ()  # paths not deleted: outside the root or via a symlink

    @property
    def trimmed(self) -> int:
        return sum(s.trimmed for s in self.streams)


@dataclass
class _Tally:
    streams: list[StreamTrim] = field(default_factory=list)
    rows: dict[str, int] = field(
        default_factory=lambda: {str(t.name): 0 for t in TABLES if t is not cameras}
    )
    paths: list[str] = field(default_factory=list)

    def add(self, table: str, count: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + count


# --- streams ------------------------------------------------------------------------------------


async def group_positions(redis: Redis | RedisCluster, stream: str) -> list[GroupPosition] | None:
    """Every group of `stream` with its position; None when the stream does not exist."""
    try:
        infos: Any = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    positions = []
    for info in infos:
        name = reply_text(info["name"])
        summary: Any = await redis.xpending(stream, name)
        oldest = summary.get("min") if summary.get("pending") else None
        positions.append(
            GroupPosition(
                name=name,
                last_delivered_id=reply_text(info["last-delivered-id"]),
                oldest_pending_id=None if oldest is None else reply_text(oldest),
            )
        )
    return positions


async def trim_stream(
    redis: Redis | RedisCluster, stream: str, cutoff_ms: int, required_groups: Iterable[str]
) -> StreamTrim:
    positions = await group_positions(redis, stream)
    if positions is None:
        return StreamTrim(stream, None, skipped="no such stream")
    missing = sorted(set(required_groups) - {p.name for p in positions})
    if missing:
        return StreamTrim(
            stream, None, skipped=f"group {', '.join(missing)} not created yet: never trimmed"
        )
    minid = safe_minid(cutoff_ms, positions)
    trimmed = await redis.xtrim(stream, minid=minid, approximate=False)
    return StreamTrim(stream, minid, int(trimmed))


# --- the projection -----------------------------------------------------------------------------


# A stream id `<ms>-<seq>` compared as a pair of numbers (the sequence may exceed bigint):
# `(split_part(id, '-', 1)::numeric, split_part(id, '-', 2)::numeric) < (:x_ms, :x_seq)`.
_DELETE_CHECKPOINTS = """
DELETE FROM projection_checkpoints WHERE stream = :stream
AND (split_part(entry_id, '-', 1)::numeric, split_part(entry_id, '-', 2)::numeric)
    < (CAST(:m_ms AS numeric), CAST(:m_seq AS numeric))
RETURNING projection
"""
_DELETE_MEDIA = """
DELETE FROM media_files WHERE camera_id = :camera AND captured_at < :cutoff
AND (split_part(entry_id, '-', 1)::numeric, split_part(entry_id, '-', 2)::numeric)
    < (CAST(:files_ms AS numeric), CAST(:files_seq AS numeric))
RETURNING path
"""
_DELETE_DETECTIONS = """
DELETE FROM detections WHERE camera_id = :camera AND captured_at < :cutoff
AND (split_part(detection_entry_id, '-', 1)::numeric,
     split_part(detection_entry_id, '-', 2)::numeric)
    < (CAST(:detections_ms AS numeric), CAST(:detections_seq AS numeric))
"""
_DELETE_EVENTS = """
DELETE FROM events WHERE camera_id = :camera
AND COALESCE(window_end, closed_at, analyzed_at) < :cutoff
AND (batch_entry_id IS NULL
     OR (split_part(batch_entry_id, '-', 1)::numeric, split_part(batch_entry_id, '-', 2)::numeric)
        < (CAST(:batches_ms AS numeric), CAST(:batches_seq AS numeric)))
AND (analysis_entry_id IS NULL
     OR (split_part(analysis_entry_id, '-', 1)::numeric,
         split_part(analysis_entry_id, '-', 2)::numeric)
        < (CAST(:analyses_ms AS numeric), CAST(:analyses_seq AS numeric)))
RETURNING id
"""
_DELETE_EVENT_DETECTIONS = "DELETE FROM event_detections WHERE event_id = ANY(CAST(:ids AS uuid[]))"
_DELETE_HISTORY = """
DELETE FROM analysis_history WHERE camera_id = :camera
AND (split_part(entry_id, '-', 1)::numeric, split_part(entry_id, '-', 2)::numeric)
    < (CAST(:analyses_ms AS numeric), CAST(:analyses_seq AS numeric))
"""
_DELETE_DEAD = """
DELETE FROM dead_letters WHERE camera_id = :camera AND dead_at < :cutoff
AND (split_part(dead_entry_id, '-', 1)::numeric, split_part(dead_entry_id, '-', 2)::numeric)
    < (CAST(:dead_ms AS numeric), CAST(:dead_seq AS numeric))
"""
_DELETE_ALERTS = """
DELETE FROM alerts WHERE camera_id = :camera AND recorded_at < :cutoff
AND (split_part(entry_id, '-', 1)::numeric, split_part(entry_id, '-', 2)::numeric)
    < (CAST(:alerts_ms AS numeric), CAST(:alerts_seq AS numeric))
"""
_UNCOUNT = (
    "UPDATE cameras SET file_count = GREATEST(file_count - :files, 0), "
    "event_count = GREATEST(event_count - :events, 0) WHERE id = :camera"
)


def _id_params(name: str, minid: str) -> dict[str, int]:
    milliseconds, sequence = id_key(minid)
    return {f"{name}_ms": milliseconds, f"{name}_seq": sequence}


async def _forget(
    conn: AsyncConnection,
    names: StreamNames,
    camera: str,
    minids: Mapping[StreamKind, str],
    cutoff: datetime,
    projection: str,
    tally: _Tally,
) -> None:
    """Delete one camera's rows and tracking rows of trimmed entries (caller's transaction)."""
    uncounted: dict[StreamKind, int] = {}
    for kind, minid in minids.items():
        rows = await conn.execute(
            text(_DELETE_CHECKPOINTS),
            {"stream": names.stream(camera, kind), **_id_params("m", minid)},
        )
        projections = [str(row[0]) for row in rows]
        tally.add("projection_checkpoints", len(projections))
        uncounted[kind] = sum(1 for p in projections if p == projection)
    params: dict[str, Any] = {"camera": camera, "cutoff": cutoff}
    for kind, minid in minids.items():
        params.update(_id_params(kind.value, minid))
    media = (await conn.execute(text(_DELETE_MEDIA), params)).all()
    tally.add("media_files", len(media))
    tally.paths.extend(str(row[0]) for row in media if row[0] is not None)
    detections = await conn.execute(text(_DELETE_DETECTIONS), params)
    tally.add("detections", detections.rowcount)
    events = [row[0] for row in await conn.execute(text(_DELETE_EVENTS), params)]
    tally.add("events", len(events))
    if events:
        linked = await conn.execute(text(_DELETE_EVENT_DETECTIONS), {"ids": events})
        tally.add("event_detections", linked.rowcount)
    history = await conn.execute(text(_DELETE_HISTORY), params)
    tally.add("analysis_history", history.rowcount)
    dead = await conn.execute(text(_DELETE_DEAD), params)
    tally.add("dead_letters", dead.rowcount)
    alerts = await conn.execute(text(_DELETE_ALERTS), params)
    tally.add("alerts", alerts.rowcount)
    files, batches = uncounted.get(StreamKind.FILES, 0), uncounted.get(StreamKind.BATCHES, 0)
    if files or batches:
        await conn.execute(text(_UNCOUNT), {"camera": camera, "files": files, "events": batches})


# --- media --------------------------------------------------------------------------------------


def _delete_media(root: Path, paths: Iterable[str]) -> tuple[int, int, list[str]]:
    """Delete the files at `paths` (relative to `root`): (deleted, missing, refused paths)."""
    base = root.resolve()
    deleted = missing = 0
    refused: list[str] = []
    for relative in paths:
        try:
            target = confine(base, relative)
        except PathOutsideRootError:
            refused.append(relative)
            continue
        # `confine` resolves symlinks; a path whose resolution differs goes through one.
        if target != base / PurePosixPath(relative.replace("\\", "/")):
            refused.append(relative)
            continue
        try:
            if not target.is_file():
                missing += 1
                continue
            target.unlink()
        except FileNotFoundError:
            missing += 1
            continue
        deleted += 1
    return deleted, missing, refused


# --- the run ------------------------------------------------------------------------------------


async def run_retention(
    engine: AsyncEngine,
    redis: Redis | RedisCluster,
    names: StreamNames,
    cameras: Iterable[str],
    now: datetime,
    retention_days: int,
    delete_media: bool,
    camera_root: Path | None,
    *,
    projection: str = DEFAULT_PROJECTION,
    required_groups: Iterable[str] = (Group.PROJECT.value,),
) -> RetentionReport:
    """Trim the cameras' projected streams and delete what is older than `retention_days`
    before `now` (see the module doc); one transaction per camera, after its streams are
    trimmed (a crash in between is made good by the next run)."""
    cutoff = cutoff_of(now, retention_days)
    if delete_media and camera_root is None:
        raise RetentionError("delete_media needs the camera root; pass camera_root")
    cutoff_ms = int(cutoff.timestamp() * 1000)
    required = tuple(required_groups)
    tally = _Tally()
    live = await live_schema(engine)
    async with maintenance_lock(engine, live, "retention"):
        for camera in sorted(set(cameras)):
            minids: dict[StreamKind, str] = {}
            for kind in TRIMMED:
                trim = await trim_stream(redis, names.stream(camera, kind), cutoff_ms, required)
                tally.streams.append(trim)
                minids[kind] = trim.minid or NOTHING
            async with engine.begin() as conn:
                await _forget(conn, names, camera, minids, cutoff, projection, tally)
    deleted = missing = 0
    refused: list[str] = []
    if delete_media and camera_root is not None and tally.paths:
        deleted, missing, refused = await asyncio.to_thread(_delete_media, camera_root, tally.paths)
    report = RetentionReport(
        cutoff=cutoff,
        streams=tuple(tally.streams),
        rows=dict(tally.rows),
        media_deleted=deleted,
        media_missing=missing,
        media_refused=tuple(refused),
    )
    log_event(
        logger,
        "retention.done",
        cutoff=cutoff.isoformat(),
        trimmed=report.trimmed,
        rows=report.rows,
        media_deleted=deleted,
        media_refused=len(refused),
    )
    return report

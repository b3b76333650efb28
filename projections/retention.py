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

Retention rules (`projections.retention_rules`) give each camera its own horizon for rows and
entries (the cutoff above) and delete media files earlier by the risk level of their events,
leaving their rows (and so the streams and a rebuild) alone. A dry run (`hsi retention plan`)
goes through the same steps without changing anything: it reads the groups' positions and
counts the entries below the MINID instead of trimming, deletes the rows in a transaction it
rolls back, and looks at the files instead of deleting them, so its counts are what a run
right after it deletes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis, RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.errors import RetentionError
from projections.projector import DEFAULT_PROJECTION
from projections.retention_media import (
    DELETED,
    MISSING,
    REFUSED,
    media_candidates,
    media_outcomes,
)
from projections.retention_rules import (
    CameraRetention,
    MediaCandidate,
    RetentionRules,
    cutoff_of,
    level_of,
    media_past_rules,
)
from projections.retention_streams import (
    NOTHING,
    GroupPosition,
    StreamTrim,
    count_below,
    group_positions,
    next_id,
    safe_minid,
    trim_stream,
)
from projections.shadow import live_schema, maintenance_lock
from projections.tables import TABLES, cameras
from streams.logs import log_event
from streams.names import TRIMMED, Group, StreamKind, StreamNames
from streams.replies import id_key

logger = logging.getLogger("hsi.retention")

__all__ = [
    "NOTHING",
    "GroupPosition",
    "LevelCount",
    "RetentionReport",
    "StreamTrim",
    "count_below",
    "group_positions",
    "next_id",
    "run_retention",
    "safe_minid",
    "trim_stream",
]

# --- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelCount:
    """What goes for one camera and level: event rows, media files on disk and their bytes."""

    events: int = 0
    media_files: int = 0
    media_bytes: int = 0


@dataclass(frozen=True)
class RetentionReport:
    """What a run deleted, or a dry run (`planned`) would delete."""

    cutoff: datetime  # of a camera without rules of its own
    streams: tuple[StreamTrim, ...]
    rows: Mapping[str, int]  # table → rows deleted, every table but cameras (never deleted)
    media_deleted: int = 0
    media_missing: int = 0  # files to delete that were already gone
    media_refused: tuple[str, ...] = ()  # paths not deleted: outside the root or via a symlink
    cutoffs: Mapping[str, datetime] = field(default_factory=dict)  # camera → its rows' cutoff
    levels: Mapping[tuple[str, str], LevelCount] = field(default_factory=dict)  # (camera, level)
    planned: bool = False

    @property
    def trimmed(self) -> int:
        return sum(s.trimmed for s in self.streams)

    @property
    def media_bytes(self) -> int:
        return sum(c.media_bytes for c in self.levels.values())


@dataclass
class _Tally:
    streams: list[StreamTrim] = field(default_factory=list)
    rows: dict[str, int] = field(
        default_factory=lambda: {str(t.name): 0 for t in TABLES if t is not cameras}
    )
    paths: list[str] = field(default_factory=list)
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    media: dict[str, tuple[str, str]] = field(default_factory=dict)  # path → (camera, level)

    def add(self, table: str, count: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + count


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
RETURNING id, risk_level
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
    deleted_events = (await conn.execute(text(_DELETE_EVENTS), params)).all()
    events = [row[0] for row in deleted_events]
    tally.add("events", len(events))
    for row in deleted_events:
        key = (camera, str(row[1] or "unrated"))
        tally.events[key] = tally.events.get(key, 0) + 1
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
    rules: RetentionRules | None = None,
    dry_run: bool = False,
    projection: str = DEFAULT_PROJECTION,
    required_groups: Iterable[str] = (Group.PROJECT.value,),
) -> RetentionReport:
    """Trim the cameras' projected streams and delete what is older than their horizon
    (`retention_days` unless `rules` say otherwise) before `now` (see the module doc); one
    transaction per camera, after its streams are trimmed (a crash in between is made good by
    the next run). With `dry_run`, change nothing and report what a run would delete."""
    rules = rules or RetentionRules(retention_days)
    rules.check(delete_media)
    if delete_media and camera_root is None:
        raise RetentionError("delete_media needs the camera root; pass camera_root")
    required = tuple(required_groups)
    tally = _Tally()
    cutoffs: dict[str, datetime] = {}
    live = await live_schema(engine)
    async with maintenance_lock(engine, live, "retention"):
        for camera in sorted(set(cameras)):
            rule = rules.for_camera(camera)
            cutoff = cutoffs[camera] = rule.cutoff(now)
            cutoff_ms = int(cutoff.timestamp() * 1000)
            minids: dict[StreamKind, str] = {}
            for kind in TRIMMED:
                stream = names.stream(camera, kind)
                trim = await trim_stream(redis, stream, cutoff_ms, required, dry_run=dry_run)
                tally.streams.append(trim)
                minids[kind] = trim.minid or NOTHING
            async with engine.connect() as conn:
                transaction = await conn.begin()
                try:
                    await _camera(
                        conn,
                        names,
                        camera,
                        minids,
                        rule,
                        now,
                        projection,
                        tally,
                        delete_media=delete_media,
                    )
                finally:
                    if dry_run:
                        await transaction.rollback()
                    else:
                        await transaction.commit()
    outcomes: dict[str, tuple[str, int]] = {}
    if delete_media and camera_root is not None and tally.media:
        outcomes = await asyncio.to_thread(
            media_outcomes, camera_root, list(tally.media), delete=not dry_run
        )
    report = RetentionReport(
        cutoff=rules.default.cutoff(now),
        streams=tuple(tally.streams),
        rows=dict(tally.rows),
        media_deleted=sum(1 for outcome, _ in outcomes.values() if outcome == DELETED),
        media_missing=sum(1 for outcome, _ in outcomes.values() if outcome == MISSING),
        media_refused=tuple(p for p, (outcome, _) in outcomes.items() if outcome == REFUSED),
        cutoffs=cutoffs,
        levels=_levels(tally, outcomes),
        planned=dry_run,
    )
    log_event(
        logger,
        "retention.planned" if dry_run else "retention.done",
        cutoff=report.cutoff.isoformat(),
        trimmed=report.trimmed,
        rows=report.rows,
        media_deleted=report.media_deleted,
        media_bytes=report.media_bytes,
        media_refused=len(report.media_refused),
    )
    return report


async def _camera(
    conn: AsyncConnection,
    names: StreamNames,
    camera: str,
    minids: Mapping[StreamKind, str],
    rule: CameraRetention,
    now: datetime,
    projection: str,
    tally: _Tally,
    *,
    delete_media: bool,
) -> None:
    """One camera's rows (`_forget`) and the media files to delete: those of the rows deleted,
    and those a level rule deletes (their rows stay)."""
    candidates: list[MediaCandidate] = []
    if delete_media:
        candidates = await media_candidates(conn, camera, cutoff_of(now, rule.shortest_days))
    first_path = len(tally.paths)
    await _forget(conn, names, camera, minids, rule.cutoff(now), projection, tally)
    with_rows = set(tally.paths[first_path:])
    if not delete_media:
        return
    by_path = {c.path: c for c in candidates}
    for path in sorted(with_rows):
        known = by_path.get(path)
        tally.media[path] = (camera, "none" if known is None else level_of(known, rule))
    for candidate, level in media_past_rules(
        (c for c in candidates if c.path not in with_rows), rule, now
    ):
        tally.media[candidate.path] = (camera, level)


def _levels(
    tally: _Tally, outcomes: Mapping[str, tuple[str, int]]
) -> dict[tuple[str, str], LevelCount]:
    counts: dict[tuple[str, str], LevelCount] = {
        key: LevelCount(events=n) for key, n in tally.events.items()
    }
    for path, key in tally.media.items():
        outcome, size = outcomes.get(path, (MISSING, 0))
        if outcome != DELETED:
            continue
        count = counts.get(key, LevelCount())
        counts[key] = LevelCount(count.events, count.media_files + 1, count.media_bytes + size)
    return counts

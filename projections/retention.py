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
from pathlib import Path, PurePosixPath
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.errors import RetentionError
from projections.projector import DEFAULT_PROJECTION
from projections.retention_rules import (
    CameraRetention,
    MediaCandidate,
    RetentionRules,
    cutoff_of,
    level_of,
    media_past_rules,
)
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


# --- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTrim:
    """One stream's trim: the MINID used (None when it was not trimmed) and why not."""

    stream: str
    minid: str | None
    trimmed: int = 0
    skipped: str | None = None


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


async def count_below(redis: Redis | RedisCluster, stream: str, minid: str) -> int:
    """How many entries of `stream` a trim at `minid` would remove."""
    if id_key(minid) == (0, 0):
        return 0
    count, start = 0, "-"
    while True:
        page: Any = await redis.xrange(stream, min=start, max=f"({minid}", count=1000)
        count += len(page)
        if len(page) < 1000:
            return count
        start = f"({reply_text(page[-1][0])}"


async def trim_stream(
    redis: Redis | RedisCluster,
    stream: str,
    cutoff_ms: int,
    required_groups: Iterable[str],
    *,
    dry_run: bool = False,
) -> StreamTrim:
    """Trim `stream` at its safe MINID; with `dry_run`, only count what that would remove."""
    positions = await group_positions(redis, stream)
    if positions is None:
        return StreamTrim(stream, None, skipped="no such stream")
    missing = sorted(set(required_groups) - {p.name for p in positions})
    if missing:
        return StreamTrim(
            stream, None, skipped=f"group {', '.join(missing)} not created yet: never trimmed"
        )
    minid = safe_minid(cutoff_ms, positions)
    if dry_run:
        return StreamTrim(stream, minid, await count_below(redis, stream, minid))
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
RETURNING id, risk_level
"""
# Media files older than `:before` with the levels of their events (NULL: an event without one).
_MEDIA_CANDIDATES = """
SELECT m.path, m.captured_at, m.detection_status <> 'pending' AS detected,
       array_agg(e.id IS NOT NULL) AS in_event, array_agg(e.risk_level) AS levels
FROM media_files m
LEFT JOIN event_detections ed ON ed.camera_id = m.camera_id AND ed.file_entry_id = m.entry_id
LEFT JOIN events e ON e.id = ed.event_id
WHERE m.camera_id = :camera AND m.captured_at < :before AND m.path IS NOT NULL
GROUP BY m.id
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


async def _media_candidates(
    conn: AsyncConnection, camera: str, before: datetime
) -> list[MediaCandidate]:
    rows = await conn.execute(text(_MEDIA_CANDIDATES), {"camera": camera, "before": before})
    return [
        MediaCandidate(
            path=str(path),
            captured_at=captured_at,
            levels=frozenset(
                str(level or "unrated")
                for joined, level in zip(in_event, levels, strict=True)
                if joined
            ),
            detected=bool(detected),
        )
        for path, captured_at, detected, in_event, levels in rows
    ]


# --- media --------------------------------------------------------------------------------------

DELETED, MISSING, REFUSED = "deleted", "missing", "refused"


def _media_outcomes(
    root: Path, paths: Iterable[str], *, delete: bool
) -> dict[str, tuple[str, int]]:
    """Each path (relative to `root`) → (deleted, missing or refused, its bytes). Without
    `delete`, nothing is deleted and a file present counts as deleted."""
    base = root.resolve()
    outcomes: dict[str, tuple[str, int]] = {}
    for relative in paths:
        try:
            target = confine(base, relative)
        except PathOutsideRootError:
            outcomes[relative] = (REFUSED, 0)
            continue
        # `confine` resolves symlinks; a path whose resolution differs goes through one.
        if target != base / PurePosixPath(relative.replace("\\", "/")):
            outcomes[relative] = (REFUSED, 0)
            continue
        try:
            if not target.is_file():
                outcomes[relative] = (MISSING, 0)
                continue
            size = target.stat().st_size
            if delete:
                target.unlink()
        except FileNotFoundError:
            outcomes[relative] = (MISSING, 0)
            continue
        outcomes[relative] = (DELETED, size)
    return outcomes


def _delete_media(root: Path, paths: Iterable[str]) -> tuple[int, int, list[str]]:
    """Delete the files at `paths` (relative to `root`): (deleted, missing, refused paths)."""
    outcomes = _media_outcomes(root, paths, delete=True)
    counts = [outcome for outcome, _ in outcomes.values()]
    refused = [path for path, (outcome, _) in outcomes.items() if outcome == REFUSED]
    return counts.count(DELETED), counts.count(MISSING), refused


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
            _media_outcomes, camera_root, list(tally.media), delete=not dry_run
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
        candidates = await _media_candidates(conn, camera, cutoff_of(now, rule.shortest_days))
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

"""The few read queries the dashboard needs beyond `hsi.api.queries`: a picture per event,
the newer-page of the event listing (for "previous"), today's counts per camera, and events
per hour by risk level. Same tables, same item shapes as the API."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api.cursor import Cursor, encode_cursor
from hsi.api.queries import events as q
from hsi.api.queries.paging import uuid_keyset
from hsi.web.format import UNSCORED
from projections.tables import cameras, detections, event_detections, events, media_files


@dataclass(frozen=True)
class Cover:
    """The picture that stands for an event: its most confident detection (a thumbnail with
    the boxes of that file), else its first image file as uploaded."""

    camera_id: str
    detection_id: str | None
    path: str | None
    media_kind: str | None
    label: str | None
    confidence: float | None


async def event_covers(conn: AsyncConnection, event_ids: Sequence[str]) -> dict[str, Cover]:
    ids = [uuid.UUID(i) for i in event_ids]
    if not ids:
        return {}
    ed, d, m = event_detections, detections, media_files
    rank = func.row_number().over(
        partition_by=ed.c.event_id, order_by=(d.c.confidence.desc(), d.c.id)
    )
    ranked = (
        select(
            ed.c.event_id,
            d.c.id,
            d.c.camera_id,
            d.c.path,
            d.c.label,
            d.c.confidence,
            rank.label("rank"),
        )
        .select_from(
            ed.join(
                d,
                and_(
                    d.c.camera_id == ed.c.camera_id,
                    d.c.detection_entry_id == ed.c.detection_entry_id,
                ),
            )
        )
        .where(ed.c.event_id.in_(ids))
        .subquery()
    )
    best = select(ranked).where(ranked.c.rank == 1)
    covers: dict[str, Cover] = {}
    for row in (await conn.execute(best)).all():
        covers[str(row.event_id)] = Cover(
            row.camera_id, str(row.id), row.path, "image", row.label, round(row.confidence, 2)
        )
    missing = [i for i in ids if str(i) not in covers]
    if missing:
        position = func.row_number().over(partition_by=ed.c.event_id, order_by=ed.c.position)
        files = (
            select(ed.c.event_id, ed.c.camera_id, m.c.path, m.c.media_kind, position.label("rank"))
            .select_from(
                ed.join(
                    m, and_(m.c.camera_id == ed.c.camera_id, m.c.entry_id == ed.c.file_entry_id)
                )
            )
            .where(ed.c.event_id.in_(missing))
            .subquery()
        )
        first = select(files).where(files.c.rank == 1)
        for row in (await conn.execute(first)).all():
            covers[str(row.event_id)] = Cover(
                row.camera_id, None, row.path, row.media_kind, None, None
            )
    return covers


@dataclass(frozen=True)
class NewerPage:
    items: list[dict[str, Any]]  # newest first, like every page
    has_newer: bool  # more events before (newer than) the first item


async def events_before(
    conn: AsyncConnection, filters: q.EventFilters, limit: int, before: Cursor
) -> NewerPage:
    """The `limit` events just newer than `before` (the first item of the page shown), for
    the "previous page" link of a keyset listing that only pages forward."""
    query = uuid_keyset(events, "window_start", filters.conditions(), limit, before, older=False)
    rows = (await conn.execute(query)).all()
    shown = list(reversed(rows[:limit]))
    return NewerPage([q.event_item(row) for row in shown], len(rows) > limit)


def cursor_of(item: dict[str, Any]) -> str:
    """The API cursor (kind `events`) of an event item: page after it, or before it."""
    at = datetime.fromisoformat(item["window_start"].replace("Z", "+00:00"))
    return encode_cursor(Cursor(q.CURSOR_KIND, at, (item["id"],)))


@dataclass(frozen=True)
class Today:
    files: int = 0
    events: int = 0


async def today_counts(conn: AsyncConnection, since: datetime) -> dict[str, Today]:
    """Files captured and events started since `since` (the home's midnight), per camera."""
    m, e = media_files, events
    n = func.count().label("n")
    files = (
        await conn.execute(
            select(m.c.camera_id, n).where(m.c.captured_at >= since).group_by(m.c.camera_id)
        )
    ).all()
    started = (
        await conn.execute(
            select(e.c.camera_id, n).where(e.c.window_start >= since).group_by(e.c.camera_id)
        )
    ).all()
    out: dict[str, Today] = {}
    for row in files:
        out[row.camera_id] = Today(files=int(row.n))
    for row in started:
        out[row.camera_id] = Today(out.get(row.camera_id, Today()).files, int(row.n))
    return out


async def hourly_levels(
    conn: AsyncConnection, start: datetime, end: datetime
) -> dict[tuple[datetime, str], int]:
    """Events per UTC hour of their window start and risk level (`unscored` for none)."""
    hour = func.date_trunc("hour", func.timezone("UTC", events.c.window_start)).label("hour")
    level = func.coalesce(events.c.risk_level, UNSCORED).label("level")
    rows = (
        await conn.execute(
            select(hour, level, func.count().label("n"))
            .where(events.c.window_start >= start, events.c.window_start < end)
            .group_by(hour, level)
        )
    ).all()
    return {(r.hour.replace(tzinfo=UTC), str(r.level)): int(r.n) for r in rows}


async def object_types(conn: AsyncConnection, limit: int = 100) -> list[str]:
    """The labels seen so far, for the object-type suggestions of the filter form."""
    rows = await conn.execute(
        select(detections.c.label)
        .group_by(detections.c.label)
        .order_by(detections.c.label)
        .limit(limit)
    )
    return [str(r.label) for r in rows.all()]


async def camera_names(conn: AsyncConnection) -> dict[str, str]:
    """Each camera's id → what people call it (its folder's name), by id."""
    rows = await conn.execute(select(cameras.c.id, cameras.c.name).order_by(cameras.c.id))
    return {str(r.id): str(r.name or r.id) for r in rows.all()}

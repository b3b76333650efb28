"""Cameras with their counts, last activity, latest file and latest event, and their clock.

Counts are counted from the rows (index-only scans per camera), not read from the `cameras`
counter columns, so they agree with the listings whatever order entries were projected in.

The clock check reads the camera's two most recently arrived files: `offset_seconds` is how long
after it was taken the latest arrived (its observation time less its capture time).

- A negative offset beyond the tolerance: a picture "taken" after it arrived. The camera's clock
  runs fast (`clock: "fast"`); its files are batched by arrival time (`streams.batching.item_time`).
- A large positive offset is a late upload (an outage's backlog, a backfill) or a clock running
  slow. One file cannot tell them apart; two can: uploads arriving minutes apart that are both
  late by the same amount (within `SAME_LAG_SECONDS`) are a clock running slow (`clock: "slow"`),
  while a backlog's files arrive close together with very different lags. A slow clock keeps a
  camera's files in the right order (they are batched by its own times), but its events are
  listed at its wrong times and their alerts say they are late: the fix is the camera's clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api import links
from hsi.api.responses import iso
from projections.tables import cameras, events, media_files

LATE_SECONDS = 600.0  # a lag below this is an ordinary upload, not a wrong clock
SAME_LAG_SECONDS = 120.0  # two lags this close are one constant lag
APART_SECONDS = 60.0  # two uploads this far apart are not one burst of a backlog


def _query() -> Select[Any]:
    m, e = media_files, events
    file_count = select(func.count()).where(m.c.camera_id == cameras.c.id).scalar_subquery()
    event_count = select(func.count()).where(e.c.camera_id == cameras.c.id).scalar_subquery()
    latest_file = (
        select(m.c.id, m.c.path, m.c.captured_at, m.c.observed_at, m.c.media_kind)
        .where(m.c.camera_id == cameras.c.id, m.c.captured_at.is_not(None))
        .order_by(m.c.captured_at.desc())
        .limit(1)
        .lateral("latest_file")
    )
    latest_arrival, previous_arrival = (
        select(m.c.captured_at, m.c.observed_at)
        .where(m.c.camera_id == cameras.c.id, m.c.observed_at.is_not(None))
        .order_by(m.c.observed_at.desc())
        .offset(position)
        .limit(1)
        .lateral(name)
        for position, name in enumerate(("latest_arrival", "previous_arrival"))
    )
    latest_event = (
        select(e.c.id, e.c.window_start, e.c.window_end, e.c.risk_level, e.c.risk_score)
        .where(e.c.camera_id == cameras.c.id, e.c.window_start.is_not(None))
        .order_by(e.c.window_start.desc(), e.c.id.desc())
        .limit(1)
        .lateral("latest_event")
    )
    return select(
        cameras,
        file_count.label("files"),
        event_count.label("events"),
        latest_file.c.id.label("file_id"),
        latest_file.c.path.label("file_path"),
        latest_file.c.captured_at.label("file_captured_at"),
        latest_file.c.observed_at.label("file_observed_at"),
        latest_file.c.media_kind.label("file_media_kind"),
        latest_arrival.c.captured_at.label("arrival_captured_at"),
        latest_arrival.c.observed_at.label("arrival_observed_at"),
        previous_arrival.c.captured_at.label("previous_captured_at"),
        previous_arrival.c.observed_at.label("previous_observed_at"),
        latest_event.c.id.label("event_id"),
        latest_event.c.window_start.label("event_window_start"),
        latest_event.c.window_end.label("event_window_end"),
        latest_event.c.risk_level.label("event_risk_level"),
        latest_event.c.risk_score.label("event_risk_score"),
    ).select_from(
        cameras.outerjoin(latest_file, true())
        .outerjoin(latest_arrival, true())
        .outerjoin(previous_arrival, true())
        .outerjoin(latest_event, true()),
    )


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


Arrival = tuple[datetime | None, datetime | None]  # (captured_at, observed_at) of one file


def clock_check(
    latest: Arrival, previous: Arrival, tolerance_seconds: float
) -> dict[str, Any] | None:
    """The clock check of a camera's two most recently arrived files (see the module doc)."""
    captured, observed = latest
    if captured is None or observed is None:
        return None
    offset = (observed - captured).total_seconds()
    clock = "fast" if offset < -tolerance_seconds else None
    before_captured, before_observed = previous
    if clock is None and before_captured is not None and before_observed is not None:
        before = (before_observed - before_captured).total_seconds()
        if (
            min(offset, before) > LATE_SECONDS
            and abs(offset - before) <= SAME_LAG_SECONDS
            and (observed - before_observed).total_seconds() >= APART_SECONDS
        ):
            clock = "slow"
    return {
        "skewed": clock is not None,
        "clock": clock,
        "offset_seconds": round(offset, 1),
        "checked_at": iso(observed),
    }


def camera_item(row: Row[Any], clock_tolerance_seconds: float) -> dict[str, Any]:
    latest_file = None
    if row.file_id is not None:
        latest_file = {
            "id": str(row.file_id),
            "path": row.file_path,
            "media_kind": row.file_media_kind,
            "captured_at": iso(row.file_captured_at),
            "media_url": links.media_url(row.id, row.file_path),
        }
    latest_event = None
    if row.event_id is not None:
        latest_event = {
            "id": str(row.event_id),
            "window_start": iso(row.event_window_start),
            "risk_level": row.event_risk_level,
            "risk_score": row.event_risk_score,
            "url": links.event_url(row.event_id),
        }
    return {
        "id": row.id,
        "name": row.name,
        "folder": row.folder,
        "status": row.status,
        "first_seen": iso(row.first_seen),
        "last_seen": iso(row.last_seen),
        "file_count": int(row.files),
        "event_count": int(row.events),
        "last_event_at": iso(_latest(row.last_event_at, row.event_window_end)),
        "last_activity": iso(
            _latest(row.last_seen, row.file_observed_at, row.last_event_at, row.event_window_end)
        ),
        "latest_file": latest_file,
        "latest_event": latest_event,
        "clock": clock_check(
            (row.arrival_captured_at, row.arrival_observed_at),
            (row.previous_captured_at, row.previous_observed_at),
            clock_tolerance_seconds,
        ),
        "links": {
            "self": links.camera_url(row.id),
            "events": f"/api/events?camera_id={row.id}",
            "detections": f"/api/detections?camera_id={row.id}",
        },
    }


async def list_cameras(
    conn: AsyncConnection, clock_tolerance_seconds: float
) -> list[dict[str, Any]]:
    rows = (await conn.execute(_query().order_by(cameras.c.id))).all()
    return [camera_item(row, clock_tolerance_seconds) for row in rows]


async def get_camera(
    conn: AsyncConnection, camera_id: str, clock_tolerance_seconds: float
) -> dict[str, Any] | None:
    row = (await conn.execute(_query().where(cameras.c.id == camera_id))).first()
    return None if row is None else camera_item(row, clock_tolerance_seconds)


async def camera_folder(conn: AsyncConnection, camera_id: str) -> str | None:
    """The camera's folder, relative to the camera root."""
    folder = await conn.scalar(select(cameras.c.folder).where(cameras.c.id == camera_id))
    return None if folder is None else str(folder)

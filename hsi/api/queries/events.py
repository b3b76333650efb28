"""Events: the keyset-paged listing, one event with its files, detections and alert state (the
latest delivery outcome per channel), and statistics.

Events are listed newest first by (window_start DESC, id DESC), the order of
`events_window_idx`. An event whose batch has not been projected yet (only its analysis arrived,
so it has no window) is not listed; it can still be fetched by id.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Row, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsi.api import links
from hsi.api.cursor import Cursor
from hsi.api.queries.alerts import event_alerts
from hsi.api.queries.detections import detection_item
from hsi.api.queries.paging import Page, in_window, make_page
from hsi.api.responses import iso, stored_error
from hsi.infra.db import fetch_rows
from projections.tables import analysis_history, detections, event_detections, events, media_files
from streams.severity import RiskLevel, SeverityThresholds

# A row of any number of columns (Row[Any] is a row of one).
_AnyRow: TypeAlias = Row[*tuple[Any, ...]]

CURSOR_KIND = "events"
RISK_LEVELS: tuple[str, ...] = tuple(level.value for level in RiskLevel)
ANALYSIS_STATUSES: tuple[str, ...] = ("pending", "completed", "failed")

_LIST_KEYS = (
    "id",
    "camera_id",
    "window_start",
    "window_end",
    "close_reason",
    "detection_count",
    "object_types",
    "zones",
    "max_confidence",
    "fast_path",
    "closed_at",
    "analysis_status",
    "risk_score",
    "risk_level",
    "summary",
    "analyzer",
    "model",
    "analyzed_at",
)


@dataclass(frozen=True)
class EventFilters:
    camera_id: str | None = None
    risk_levels: tuple[str, ...] = ()
    min_score: int | None = None
    object_types: tuple[str, ...] = ()  # any of them
    zones: tuple[str, ...] = ()  # an object stood in any of them
    since: datetime | None = None
    until: datetime | None = None
    analysis_statuses: tuple[str, ...] = ()

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = [events.c.window_start.is_not(None)]
        if self.camera_id is not None:
            out.append(events.c.camera_id == self.camera_id)
        if self.risk_levels:
            out.append(events.c.risk_level.in_(self.risk_levels))
        if self.min_score is not None:
            out.append(events.c.risk_score >= self.min_score)
        if self.object_types:
            out.append(events.c.object_types.overlap(list(self.object_types)))
        if self.zones:
            out.append(events.c.zones.overlap(list(self.zones)))
        out.extend(in_window(events.c.window_start, self.since, self.until))
        if self.analysis_statuses:
            out.append(events.c.analysis_status.in_(self.analysis_statuses))
        return out

    def parameters(self) -> dict[str, Any]:
        """The values of the filters in use, by the name of their condition in `FILTER_SQL`."""
        params: dict[str, Any] = {}
        if self.camera_id is not None:
            params["camera_id"] = self.camera_id
        if self.risk_levels:
            params["risk_levels"] = list(self.risk_levels)
        if self.min_score is not None:
            params["min_score"] = self.min_score
        if self.object_types:
            params["object_types"] = list(self.object_types)
        if self.zones:
            params["zones"] = list(self.zones)
        if self.since is not None:
            params["since"] = self.since
        if self.until is not None:
            params["until"] = self.until
        if self.analysis_statuses:
            params["analysis_statuses"] = list(self.analysis_statuses)
        return params


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


_LIST_VALUES = operator.attrgetter(*_LIST_KEYS)
_TIMES = ("window_start", "window_end", "closed_at", "analyzed_at")


def _values(item: dict[str, Any]) -> dict[str, Any]:
    item["object_types"] = item["object_types"] or []
    item["zones"] = item["zones"] or []
    item["max_confidence"] = _rounded(item["max_confidence"])
    for key in _TIMES:
        at = item[key]
        if at is not None and at.tzinfo is not UTC:
            item[key] = at.astimezone(UTC)
    camera_id = item["camera_id"]
    item["links"] = {"self": links.event_url(item["id"]), "camera": links.camera_url(camera_id)}
    return item


def _utc(at: datetime | None) -> datetime | None:
    return at if at is None or at.tzinfo is UTC else at.astimezone(UTC)


def event_values(row: Sequence[Any]) -> dict[str, Any]:
    """A row of `list_events` (its columns in listing order) with the times aware UTC
    datetimes: what the API's JSON writes, as orjson formats them the way `event_item` does, in
    C. One dictionary display per row: the listing's busiest loop."""
    (
        event_id,
        camera_id,
        window_start,
        window_end,
        close_reason,
        detection_count,
        object_types,
        zones,
        max_confidence,
        fast_path,
        closed_at,
        analysis_status,
        risk_score,
        risk_level,
        summary,
        analyzer,
        model,
        analyzed_at,
    ) = row
    if window_start is None or window_start.tzinfo is not UTC:  # one session's times: alike
        window_start, window_end, closed_at, analyzed_at = map(
            _utc, (window_start, window_end, closed_at, analyzed_at)
        )
    return {
        "id": event_id,
        "camera_id": camera_id,
        "window_start": window_start,
        "window_end": window_end,
        "close_reason": close_reason,
        "detection_count": detection_count,
        "object_types": object_types or [],
        "zones": zones or [],
        "max_confidence": None if max_confidence is None else round(max_confidence, 4),
        "fast_path": fast_path,
        "closed_at": closed_at,
        "analysis_status": analysis_status,
        "risk_score": risk_score,
        "risk_level": risk_level,
        "summary": summary,
        "analyzer": analyzer,
        "model": model,
        "analyzed_at": analyzed_at,
        "links": {"self": links.event_url(event_id), "camera": links.camera_url(camera_id)},
    }


def event_item(row: Row[Any]) -> dict[str, Any]:
    """An event of any row holding the listing's columns, the id and the times as strings (ISO
    8601 with `Z`)."""
    item = _values(dict(zip(_LIST_KEYS, _LIST_VALUES(row), strict=True)))
    item["id"] = str(item["id"])
    for key in _TIMES:
        item[key] = iso(item[key])
    return item


_ID, _AT = _LIST_KEYS.index("id"), _LIST_KEYS.index("window_start")


def _cursor_of(row: Sequence[Any]) -> Cursor:
    return Cursor(CURSOR_KIND, row[_AT], (str(row[_ID]),))


# `EventFilters.conditions()` as SQL text, every value a psycopg parameter. The listing reads
# the id as text (what the JSON holds: no UUID object made and printed again per row), so its
# order names the column itself, not the output column of that name.
LIST_COLUMNS = ", ".join(_LIST_KEYS)
_LIST_SELECT = ", ".join("events.id::text AS id" if key == "id" else key for key in _LIST_KEYS)
_LIST_SQL = f"SELECT {_LIST_SELECT} FROM events WHERE window_start IS NOT NULL"  # noqa: S608
FILTER_SQL = {
    "camera_id": " AND camera_id = %(camera_id)s",
    "risk_levels": " AND risk_level = ANY(%(risk_levels)s::text[])",
    "min_score": " AND risk_score >= %(min_score)s",
    "object_types": " AND object_types && %(object_types)s::text[]",
    "zones": " AND zones && %(zones)s::text[]",
    "since": " AND window_start >= %(since)s",
    "until": " AND window_start < %(until)s",
    "analysis_statuses": " AND analysis_status = ANY(%(analysis_statuses)s::text[])",
    "after": " AND (window_start, id) < (%(after_at)s, %(after_id)s)",
}
_LIST_ORDER = " ORDER BY window_start DESC, events.id DESC LIMIT %(limit)s"


def list_statement(
    filters: EventFilters, limit: int, after: Cursor | None
) -> tuple[str, dict[str, Any]]:
    """The statement of a page of `list_events` and its parameters."""
    params = filters.parameters()
    where = list(params)
    if after is not None:
        where.append("after")
        params["after_at"] = after.at
        params["after_id"] = uuid.UUID(after.key[0])
    params["limit"] = limit + 1
    return _LIST_SQL + "".join(FILTER_SQL[name] for name in where) + _LIST_ORDER, params


async def list_events(
    source: AsyncEngine | AsyncConnection,
    filters: EventFilters,
    limit: int,
    after: Cursor | None,
    item: Callable[[Any], dict[str, Any]] = event_item,
) -> Page:
    """A page of events, read on a pooled connection of the engine (`fetch_rows`) or through
    the connection given; `item` makes each one (`event_values` for JSON answers, of any
    sequence of the columns; `event_item` needs rows of a connection, with names).

    Plain SQL from fixed fragments: the listing is the API's busiest request, and building and
    compiling a SQLAlchemy statement for it cost more CPU than PostgreSQL spends answering."""
    statement, params = list_statement(filters, limit, after)
    rows = await fetch_rows(source, statement, params)
    return make_page(rows, limit, item, _cursor_of)


async def _event_files(conn: AsyncConnection, event_id: uuid.UUID) -> Sequence[_AnyRow]:
    """The files of the event's batch in batch order, with what is known of each."""
    ed = event_detections
    return (
        await conn.execute(
            select(
                ed.c.position,
                ed.c.detection_entry_id,
                ed.c.file_entry_id,
                media_files.c.id.label("file_id"),
                media_files.c.path,
                media_files.c.mime,
                media_files.c.media_kind,
                media_files.c.captured_at,
                media_files.c.detection_status,
                media_files.c.object_count,
            )
            .select_from(
                ed.outerjoin(
                    media_files,
                    and_(
                        media_files.c.camera_id == ed.c.camera_id,
                        media_files.c.entry_id == ed.c.file_entry_id,
                    ),
                )
            )
            .where(ed.c.event_id == event_id)
            .order_by(ed.c.position)
        )
    ).all()


async def _event_detections(conn: AsyncConnection, event_id: uuid.UUID) -> Sequence[_AnyRow]:
    """Every object detected in the event's files, in batch order."""
    ed = event_detections
    return (
        await conn.execute(
            select(detections, ed.c.position)
            .select_from(
                ed.join(
                    detections,
                    and_(
                        detections.c.camera_id == ed.c.camera_id,
                        detections.c.detection_entry_id == ed.c.detection_entry_id,
                    ),
                )
            )
            .where(ed.c.event_id == event_id)
            .order_by(ed.c.position, detections.c.object_index)
        )
    ).all()


def _file_item(f: _AnyRow, path: str | None, camera_id: str) -> dict[str, Any]:
    return {
        "position": f.position,
        "detection_entry_id": f.detection_entry_id,
        "file_entry_id": f.file_entry_id,
        "file_id": None if f.file_id is None else str(f.file_id),
        "path": path,
        "mime": f.mime,
        "media_kind": f.media_kind,
        "captured_at": iso(f.captured_at),
        "detection_status": f.detection_status,
        "object_count": f.object_count,
        "media_url": links.media_url(camera_id, path),
    }


async def get_event(conn: AsyncConnection, event_id: uuid.UUID) -> dict[str, Any] | None:
    """The event with its files (in batch order) and every detected object."""
    row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
    if row is None:
        return None
    file_rows = await _event_files(conn, event_id)
    detection_rows = await _event_detections(conn, event_id)
    items = [detection_item(d) for d in detection_rows]
    paths = {d.detection_entry_id: d.path for d in detection_rows}
    files = [
        _file_item(f, f.path or paths.get(f.detection_entry_id), row.camera_id) for f in file_rows
    ]
    body = event_item(row)
    body.update(
        {
            "batch_entry_id": row.batch_entry_id,
            "analysis_entry_id": row.analysis_entry_id,
            "reasoning": row.reasoning,
            "prompt_hash": row.prompt_hash,
            "analysis_latency_ms": _rounded(row.analysis_latency_ms, 3),
            "analysis_error": stored_error(row.analysis_error),
            "files": files,
            "detections": items,
            "alerts": await event_alerts(conn, event_id),
            "judgements": await event_judgements(conn, event_id),
        }
    )
    return body


async def event_judgements(conn: AsyncConnection, event_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every judgement the event had, oldest first; the last is the current one. An adopted
    re-analysis names the analysis it superseded and its run."""
    h = analysis_history.c
    query = (
        select(analysis_history).where(h.event_id == event_id).order_by(h.analyzed_at, h.entry_id)
    )
    return [
        {
            "entry_id": row.entry_id,
            "status": row.status,
            "risk_score": row.risk_score,
            "risk_level": row.risk_level,
            "summary": row.summary if row.status == "completed" else stored_error(row.summary),
            "analyzer": row.analyzer,
            "model": row.model,
            "supersedes": row.supersedes,
            "run_id": row.run_id,
            "analyzed_at": iso(row.analyzed_at),
        }
        for row in (await conn.execute(query)).all()
    ]


# --- statistics ---------------------------------------------------------------------------------

MAX_STATS_RANGE = timedelta(days=92)
DEFAULT_STATS_RANGE = timedelta(hours=24)


def stats_range(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The range of /api/events/stats: the last 24 h before `until` (default now)."""
    end = until or now
    start = since or end - DEFAULT_STATS_RANGE
    return start, end


def hour_slots(start: datetime, end: datetime) -> list[datetime]:
    """Every UTC hour that intersects [start, end)."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    slots = []
    at = first
    while at < end:
        slots.append(at)
        at += timedelta(hours=1)
    return slots


async def event_stats(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    camera_id: str | None,
    thresholds: SeverityThresholds,
) -> dict[str, Any]:
    where = [events.c.window_start >= start, events.c.window_start < end]
    if camera_id is not None:
        where.append(events.c.camera_id == camera_id)
    condition = and_(*where)
    count = func.count().label("n")
    by_level_status = (
        await conn.execute(
            select(events.c.risk_level, events.c.analysis_status, count)
            .where(condition)
            .group_by(events.c.risk_level, events.c.analysis_status)
        )
    ).all()
    by_camera = (
        await conn.execute(
            select(events.c.camera_id, count)
            .where(condition)
            .group_by(events.c.camera_id)
            .order_by(events.c.camera_id)
        )
    ).all()
    hour = func.date_trunc("hour", func.timezone("UTC", events.c.window_start)).label("hour")
    by_hour = {
        r.hour.replace(tzinfo=UTC): int(r.n)
        for r in (await conn.execute(select(hour, count).where(condition).group_by(hour))).all()
    }
    levels = dict.fromkeys(RISK_LEVELS, 0)
    statuses = dict.fromkeys(ANALYSIS_STATUSES, 0)
    total = 0
    for r in by_level_status:
        total += int(r.n)
        if r.risk_level in levels:
            levels[r.risk_level] += int(r.n)
        statuses[r.analysis_status] = statuses.get(r.analysis_status, 0) + int(r.n)
    return {
        "since": iso(start),
        "until": iso(end),
        "camera_id": camera_id,
        "total": total,
        "by_level": levels,
        "by_analysis_status": statuses,
        "by_camera": {r.camera_id: int(r.n) for r in by_camera},
        "by_hour": [{"hour": iso(h), "count": by_hour.get(h, 0)} for h in hour_slots(start, end)],
        "levels": [
            {"level": level.value, "min_score": low, "max_score": high}
            for level, low, high in thresholds.ranges()
        ],
    }

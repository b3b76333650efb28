"""What an export holds, decided before a byte is written.

`select_events()` and `event_facts()` read PostgreSQL; `plan_event()` looks at the camera root
(blocking: call it from a worker thread); `check_size()` refuses an export whose original files
add up to more than the limit. A file can be:

- `present`: on disk inside its camera's folder (`hsi.api.media.resolve_media`), exported;
- `missing`: its record is there but the file is no longer on disk (retention with
  RETENTION_DELETE_MEDIA, or someone removed it);
- `forgotten`: the record of the file itself is gone (retention deleted it);
- `refused`: its path does not lead to a media file inside the camera's folder; not exported.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api.export.manifest import original_member, picture_member
from hsi.api.media import MediaRefused, resolve_media
from hsi.api.queries.alerts import alert_item
from hsi.api.queries.detections import Box
from hsi.api.queries.events import EventFilters, get_event
from hsi.api.responses import iso
from projections.tables import alerts, cameras, events, media_files
from streams.names import StreamNames
from streams.paths import PathOutsideRootError, confine

MIB = 1024 * 1024


@dataclass(frozen=True)
class ExportConfig:
    camera_root: Path
    max_bytes: int = 2048 * MIB  # EXPORT_MAX_MB
    picture_max_width: int = 1920  # EXPORT_PICTURE_MAX_WIDTH
    jpeg_quality: int = 90
    zone: tzinfo = UTC  # local times are given in this zone (TIMEZONE)


class ExportError(Exception):
    """An export that cannot be made (the message says why and what to do)."""


class ExportTooLarge(ExportError):
    def __init__(self, total: int, limit: int, files: int) -> None:
        super().__init__(
            f"the export would hold {files} original files of {total / MIB:.1f} MB, more than "
            f"the limit of {limit / MIB:.0f} MB (EXPORT_MAX_MB): select fewer events (a camera, "
            "a shorter since/until, event ids) or raise EXPORT_MAX_MB"
        )
        self.total = total
        self.limit = limit


class FileState(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    FORGOTTEN = "forgotten"
    REFUSED = "refused"
    UNREADABLE = "unreadable"  # could not be opened when the zip was written


@dataclass(frozen=True)
class Original:
    """A camera file to copy into the zip byte for byte."""

    member: str
    source: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class Picture:
    """A file to draw its boxes on (an image, or a video's first frame)."""

    member: str
    source: Path
    boxes: tuple[Box, ...]
    box_space: tuple[int, int]  # the image size the boxes refer to


@dataclass(frozen=True)
class EventExport:
    event_id: str
    record: dict[str, Any]  # event.json, before the digests of what was written are added
    originals: tuple[Original, ...]
    pictures: tuple[Picture, ...]


@dataclass(frozen=True)
class ExportPlan:
    events: tuple[EventExport, ...]
    created_at: datetime
    selection: dict[str, Any] = field(default_factory=dict)

    def originals(self) -> dict[str, Original]:
        """Every original once (by member name), in the order they are written."""
        out: dict[str, Original] = {}
        for event in self.events:
            for original in event.originals:
                out.setdefault(original.member, original)
        return out

    @property
    def original_bytes(self) -> int:
        return sum(o.size for o in self.originals().values())


def check_size(plan: ExportPlan, limit: int) -> None:
    """`ExportTooLarge` when the original files add up to more than `limit` bytes (the pictures
    and texts, a small part of an export, are not counted)."""
    total = plan.original_bytes
    if total > limit:
        raise ExportTooLarge(total, limit, len(plan.originals()))


# --- reading PostgreSQL ------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFacts:
    detail: dict[str, Any]  # `get_event`: what GET /api/events/{id} answers
    camera: dict[str, Any]  # id, name, folder (None when the camera is not projected)
    media: dict[str, dict[str, Any]]  # file entry id → media_files row
    deliveries: list[dict[str, Any]]  # every alert outcome, oldest first, with its entry id


async def select_events(conn: AsyncConnection, filters: EventFilters) -> list[uuid.UUID]:
    """The ids of every event the filters select, oldest first."""
    query = (
        select(events.c.id)
        .where(*filters.conditions())
        .order_by(events.c.window_start, events.c.id)
    )
    return list((await conn.scalars(query)).all())


def _row(row: Row[Any] | None) -> dict[str, Any] | None:
    return None if row is None else dict(row._mapping)


async def event_facts(conn: AsyncConnection, event_id: uuid.UUID) -> EventFacts | None:
    detail = await get_event(conn, event_id)
    if detail is None:
        return None
    camera_id = detail["camera_id"]
    camera = _row(
        (await conn.execute(select(cameras).where(cameras.c.id == camera_id))).first()
    ) or {"id": camera_id, "name": None, "folder": None}
    entry_ids = [f["file_entry_id"] for f in detail["files"]]
    media_rows = (
        await conn.execute(
            select(media_files).where(
                media_files.c.camera_id == camera_id, media_files.c.entry_id.in_(entry_ids)
            )
        )
    ).all()
    alert_rows = (
        await conn.execute(
            select(alerts)
            .where(alerts.c.event_id == event_id)
            .order_by(alerts.c.recorded_at, alerts.c.id)
        )
    ).all()
    return EventFacts(
        detail=detail,
        camera={k: camera.get(k) for k in ("id", "name", "folder")},
        media={r.entry_id: dict(r._mapping) for r in media_rows},
        deliveries=[alert_item(r) for r in alert_rows],
    )


# --- the camera root ---------------------------------------------------------------------------


def locate(root: Path, folder: str | None, path: str | None) -> tuple[FileState, Path | None, str]:
    """Where a file of the event is: its state, its real path when present, and a note."""
    if folder is None or path is None:
        return FileState.REFUSED, None, "its camera or path is unknown"
    try:
        target, _mime = resolve_media(root, folder, path)
    except MediaRefused as exc:
        try:
            gone = not confine(root, path).exists()
        except (PathOutsideRootError, OSError, RuntimeError):
            gone = False
        if gone:
            return FileState.MISSING, None, "no longer on disk"
        return FileState.REFUSED, None, f"not exported: {exc.reason}"
    return FileState.PRESENT, target, "exported byte for byte"


def _boxes_by_entry(detections: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in detections:
        out.setdefault(d["detection_entry_id"], []).append(d)
    return out


def local_time(value: str | None, zone: tzinfo) -> str | None:
    """An ISO 8601 UTC time (`...Z`) in the local zone, with its offset."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(zone).isoformat()


def zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone.tzname(None) or zone)


_TIMES = ("window_start", "window_end", "closed_at", "analyzed_at")


def plan_event(
    facts: EventFacts, config: ExportConfig, names: StreamNames, created_at: datetime
) -> EventExport:
    """The members of one event and its event.json (blocking: stats the camera files)."""
    detail = facts.detail
    event_id = str(detail["id"])
    camera_id = detail["camera_id"]
    boxes = _boxes_by_entry(detail["detections"])
    originals: list[Original] = []
    pictures: list[Picture] = []
    files: list[dict[str, Any]] = []
    for item in detail["files"]:
        row = facts.media.get(item["file_entry_id"])
        entry = {
            **item,
            "captured_at_local": local_time(item["captured_at"], config.zone),
            "recorded_sha256": None if row is None else row["sha256"],
            "recorded_size": None if row is None else row["size"],
            "observed_at": None if row is None else iso(row["observed_at"]),
            "archive_path": None,
            "picture": None,
        }
        if row is None:
            state, note = FileState.FORGOTTEN, "its record was deleted by retention"
            target = None
        else:
            state, target, note = locate(config.camera_root, facts.camera["folder"], item["path"])
        if target is not None:
            stat = target.stat()
            member = original_member(camera_id, item["path"])
            originals.append(Original(member, target, stat.st_size, stat.st_mtime))
            entry["archive_path"] = member
            found = boxes.get(item["detection_entry_id"] or "", [])
            if found:
                picture = picture_member(event_id, item["position"] + 1, item["path"])
                first = found[0]
                pictures.append(
                    Picture(
                        picture,
                        target,
                        tuple(Box(**d["bbox"], highlighted=True) for d in found),
                        (first["image_width"], first["image_height"]),
                    )
                )
                entry["picture"] = picture
        entry["state"] = state.value
        entry["note"] = note
        files.append(entry)
    record = {
        **detail,
        "camera": {**facts.camera, "id": camera_id},
        "timezone": zone_name(config.zone),
        "local_times": {key: local_time(detail[key], config.zone) for key in _TIMES},
        "files": files,
        "alert_deliveries": facts.deliveries,
        "stream_entries": stream_entries(detail, files, facts.deliveries, names),
        "exported_at": iso(created_at),
    }
    return EventExport(event_id, record, tuple(originals), tuple(pictures))


def stream_entries(
    detail: dict[str, Any],
    files: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
    names: StreamNames,
) -> dict[str, Any]:
    """The stream entry each fact of the event came from: the camera's stream keys and the ids
    of its file, detection, batch, analysis (every judgement) and alert entries."""
    camera_id = detail["camera_id"]
    return {
        "streams": {
            "files": names.files(camera_id),
            "detections": names.detections(camera_id),
            "batches": names.batches(camera_id),
            "analyses": names.analyses(camera_id),
            "reanalyses": names.reanalyses(camera_id),
            "alerts": names.alerts(camera_id),
        },
        "files": [f["file_entry_id"] for f in files],
        "detections": [f["detection_entry_id"] for f in files if f["detection_entry_id"]],
        "batch": detail["batch_entry_id"],
        "analysis": detail["analysis_entry_id"],
        "judgements": [j["entry_id"] for j in detail["judgements"]],
        "alerts": [d["entry_id"] for d in deliveries],
    }


async def build_plan(
    conn: AsyncConnection,
    event_ids: list[uuid.UUID],
    config: ExportConfig,
    names: StreamNames,
    created_at: datetime,
    selection: dict[str, Any] | None = None,
) -> ExportPlan:
    """The plan of these events; `ExportError` naming an event that does not exist."""
    planned = []
    for event_id in event_ids:
        facts = await event_facts(conn, event_id)
        if facts is None:
            raise ExportError(f"no event {event_id}")
        planned.append(await asyncio.to_thread(plan_event, facts, config, names, created_at))
    return ExportPlan(tuple(planned), created_at, dict(selection or {}))

"""Detected objects: the keyset-paged listing (captured_at DESC, id DESC) and the boxes of one
detection result (for thumbnails)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import REAL, ColumnElement, Row, cast, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api import links
from hsi.api.cursor import Cursor
from hsi.api.queries.paging import Page, in_window, uuid_keyset_page
from hsi.api.responses import iso
from projections.tables import detections

CURSOR_KIND = "detections"
REAL_MIN = 2.0**-149  # the smallest positive `real` (float4, subnormal)


def real_threshold(value: float) -> float:
    """`value` as a bound that PostgreSQL can cast to `real`: a positive number below the
    smallest positive `real` would underflow (an error), and means the same as that `real`."""
    return REAL_MIN if 0.0 < value < REAL_MIN else value


@dataclass(frozen=True)
class DetectionFilters:
    camera_id: str | None = None
    labels: tuple[str, ...] = ()
    min_confidence: float | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.camera_id is not None:
            out.append(detections.c.camera_id == self.camera_id)
        if self.labels:
            out.append(detections.c.label.in_(self.labels))
        if self.min_confidence is not None:
            # The column is `real`: compare in `real` so that 0.9 means the stored 0.9.
            bound = real_threshold(self.min_confidence)
            out.append(detections.c.confidence >= cast(literal(bound), REAL))
        out.extend(in_window(detections.c.captured_at, self.since, self.until))
        return out


def detection_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "camera_id": row.camera_id,
        "label": row.label,
        "confidence": round(row.confidence, 4),
        "bbox": {
            "x": row.bbox_x,
            "y": row.bbox_y,
            "width": row.bbox_width,
            "height": row.bbox_height,
        },
        "image_width": row.image_width,
        "image_height": row.image_height,
        "frame_seconds": row.frame_seconds,
        "detector": row.detector,
        "captured_at": iso(row.captured_at),
        "detection_entry_id": row.detection_entry_id,
        "object_index": row.object_index,
        "file_id": str(row.file_id),
        "file_entry_id": row.file_entry_id,
        "path": row.path,
        "media_url": links.media_url(row.camera_id, row.path),
        "thumbnail_url": links.detection_thumbnail_url(row.id),
    }


async def list_detections(
    conn: AsyncConnection, filters: DetectionFilters, limit: int, after: Cursor | None
) -> Page:
    conditions = filters.conditions()
    return await uuid_keyset_page(
        conn, detections, "captured_at", CURSOR_KIND, conditions, limit, after, detection_item
    )


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float
    highlighted: bool


@dataclass(frozen=True)
class DetectionImage:
    """What a thumbnail needs: the file, the size the boxes refer to, every box, and for a
    video the time of the frame they were seen in (None: an image, or the first frame)."""

    camera_id: str
    path: str
    image_width: int
    image_height: int
    boxes: tuple[Box, ...]
    frame_seconds: float | None = None


def same_frame(siblings: list[Row[Any]], frame_seconds: float | None) -> list[Row[Any]]:
    """The objects of a detection result seen in the frame `frame_seconds` (a video's objects
    come from several sampled frames; an image's, or objects recorded without a time, all)."""
    if frame_seconds is None:
        return siblings
    return [s for s in siblings if s.frame_seconds is None or s.frame_seconds == frame_seconds]


async def detection_image(conn: AsyncConnection, detection_id: uuid.UUID) -> DetectionImage | None:
    """The boxes of the detection result `detection_id` belongs to (same file, same entry),
    for a video those seen in the same sampled frame."""
    row = (await conn.execute(select(detections).where(detections.c.id == detection_id))).first()
    if row is None:
        return None
    siblings = (
        await conn.execute(
            select(detections)
            .where(
                detections.c.camera_id == row.camera_id,
                detections.c.detection_entry_id == row.detection_entry_id,
            )
            .order_by(detections.c.object_index)
        )
    ).all()
    return DetectionImage(
        camera_id=row.camera_id,
        path=row.path,
        image_width=row.image_width,
        image_height=row.image_height,
        boxes=tuple(
            Box(s.bbox_x, s.bbox_y, s.bbox_width, s.bbox_height, s.id == row.id)
            for s in same_frame(list(siblings), row.frame_seconds)
        ),
        frame_seconds=row.frame_seconds,
    )

"""Projection rows for the API tests, inserted with plain SQL (the projector is not needed)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

BASE = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
LEVELS = ("low", "medium", "high", "critical")
OBJECTS = ("person", "car", "dog", "cat", "bicycle")


async def insert(engine: AsyncEngine, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row INSERT of `rows` (all with the same keys) into `table`."""
    if not rows:
        return
    columns = list(rows[0])
    row_marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - fixed test tables
        f"VALUES {', '.join([row_marks] * len(rows))}"
    )
    params = tuple(row[c] for row in rows for c in columns)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(sql, params)


async def add_camera(engine: AsyncEngine, camera_id: str, folder: str) -> None:
    await insert(
        engine,
        "cameras",
        [
            {
                "id": camera_id,
                "name": folder,
                "folder": folder,
                "first_seen": BASE - timedelta(days=30),
                "last_seen": BASE,
            }
        ],
    )


def event_row(
    index: int, camera_id: str, window_start: datetime | None, **overrides: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.UUID(int=index + 1),
        "camera_id": camera_id,
        "batch_entry_id": f"{index + 1}-0",
        "window_start": window_start,
        "window_end": None if window_start is None else window_start + timedelta(seconds=60),
        "close_reason": "window",
        "detection_count": 1,
        "object_types": ["person"],
        "max_confidence": 0.9,
        "fast_path": False,
        "closed_at": window_start,
        "analysis_status": "completed",
        "risk_score": 10,
        "risk_level": "low",
        "summary": f"event {index}",
    }
    row.update(overrides)
    return row


def many_events(count: int, cameras: Sequence[str], seed: int = 7) -> list[dict[str, Any]]:
    """`count` events over `cameras`, three per timestamp (ties broken by id), with random
    levels, scores, object types and some pending analyses; ids are shuffled against time."""
    rng = random.Random(seed)
    ids = list(range(count))
    rng.shuffle(ids)
    rows = []
    for i in range(count):
        pending = rng.random() < 0.1
        score = rng.randint(0, 100)
        level = LEVELS[min(3, score // 26)]
        rows.append(
            event_row(
                ids[i],
                cameras[i % len(cameras)],
                BASE - timedelta(minutes=i // 3),
                object_types=sorted(rng.sample(OBJECTS, rng.randint(1, 3))),
                analysis_status="pending" if pending else "completed",
                risk_score=None if pending else score,
                risk_level=None if pending else level,
            )
        )
    return rows


async def insert_many(
    engine: AsyncEngine, table: str, rows: Sequence[dict[str, Any]], chunk: int = 3000
) -> None:
    # PostgreSQL binds at most 65 535 parameters per statement.
    size = max(1, min(chunk, 60_000 // max(1, len(rows[0]))))
    for start in range(0, len(rows), size):
        await insert(engine, table, rows[start : start + size])


def media_row(
    camera_id: str, entry_id: str, path: str, captured_at: datetime, **overrides: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{camera_id}/{entry_id}"),
        "camera_id": camera_id,
        "entry_id": entry_id,
        "path": path,
        "sha256": "0" * 64,
        "size": 1234,
        "mime": "image/jpeg",
        "media_kind": "image",
        "captured_at": captured_at,
        "capture_source": "filename",
        "observed_at": captured_at + timedelta(seconds=1),
        "detection_status": "completed",
    }
    row.update(overrides)
    return row


def detection_row(
    file: dict[str, Any],
    detection_entry_id: str,
    index: int,
    label: str,
    box: tuple[float, float, float, float],
    size: tuple[int, int],
    confidence: float = 0.9,
    frame_seconds: float | None = None,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{file['camera_id']}/{detection_entry_id}/{index}"),
        "camera_id": file["camera_id"],
        "detection_entry_id": detection_entry_id,
        "object_index": index,
        "file_id": file["id"],
        "file_entry_id": file["entry_id"],
        "path": file["path"],
        "label": label,
        "confidence": confidence,
        "bbox_x": box[0],
        "bbox_y": box[1],
        "bbox_width": box[2],
        "bbox_height": box[3],
        "image_width": size[0],
        "image_height": size[1],
        "detector": "test",
        "captured_at": file["captured_at"],
        "frame_seconds": frame_seconds,
    }

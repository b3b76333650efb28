"""The raw floor of the write side: HSI's hops and rows, with redis-py and psycopg only.

Per camera and hop, a loop reads its input stream in a consumer group (`XREADGROUP COUNT n`),
does the hop's work on plain JSON bodies (orjson), and writes its outputs and XACKs its inputs
in one MULTI, as HSI does:

- detect: `files` → one `detections` entry per file (fixed objects, like the benchmarks'
  zero-cost detector);
- batch: `detections` → a `batches` entry per `files_per_batch` detections (the open batch also
  written to a state key in the MULTI, as HSI keeps it in Redis);
- analyze: `batches` → one `analyses` entry per batch (a fixed rule);
- project: all four streams of the camera in one XREADGROUP → one PostgreSQL transaction into
  HSI's own tables (the schema `hsi migrate` makes): tracking rows and detection rows by COPY,
  media files, events and the camera by `executemany` upserts (pipelined by psycopg); XACK after
  the commit.

What the floor leaves out is exactly HSI's framework: FastStream, pydantic entries, the binary
envelope with headers, telemetry, logging, dedupe, reclaimers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streams.names import StreamKind, StreamNames

logger = logging.getLogger("benchmarks.floor")

FIELD = b"d"
PROJECTION = "floor"
_NAMESPACE = uuid.UUID("5d6bc1f4-3c8e-4e59-9df5-0d0c5b0f7a11")

OBJECTS: tuple[dict[str, Any], ...] = (
    {"label": "car", "confidence": 0.82, "bbox": {"x": 120.0, "y": 340.0, "w": 420.0, "h": 260.0}},
    {
        "label": "person",
        "confidence": 0.61,
        "bbox": {"x": 900.0, "y": 300.0, "w": 140.0, "h": 380.0},
    },
)
FAST_OBJECTS: tuple[dict[str, Any], ...] = (
    {
        "label": "person",
        "confidence": 0.95,
        "bbox": {"x": 900.0, "y": 300.0, "w": 140.0, "h": 380.0},
    },
)

_MEDIA_FILE = """
INSERT INTO media_files AS t (id, camera_id, entry_id, path, sha256, size, mime, media_kind,
    captured_at, capture_source, observed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path, sha256 = EXCLUDED.sha256,
    size = EXCLUDED.size, mime = EXCLUDED.mime, media_kind = EXCLUDED.media_kind,
    captured_at = EXCLUDED.captured_at, capture_source = EXCLUDED.capture_source,
    observed_at = EXCLUDED.observed_at
"""
_MEDIA_DETECTION = """
INSERT INTO media_files AS t (id, camera_id, entry_id, path, sha256, captured_at, observed_at,
    detection_status, detector, image_width, image_height, object_count, detected_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, 'completed', %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET detection_status = 'completed', detector = EXCLUDED.detector,
    image_width = EXCLUDED.image_width, image_height = EXCLUDED.image_height,
    object_count = EXCLUDED.object_count, detected_at = EXCLUDED.detected_at
"""
_EVENT_BATCH = """
INSERT INTO events AS t (id, camera_id, batch_entry_id, window_start, window_end, close_reason,
    detection_count, object_types, max_confidence, fast_path, closed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET batch_entry_id = EXCLUDED.batch_entry_id,
    window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
    close_reason = EXCLUDED.close_reason, detection_count = EXCLUDED.detection_count,
    object_types = EXCLUDED.object_types, max_confidence = EXCLUDED.max_confidence,
    fast_path = EXCLUDED.fast_path, closed_at = EXCLUDED.closed_at
"""
_EVENT_ANALYSIS = """
INSERT INTO events AS t (id, camera_id, analysis_entry_id, analysis_status, risk_score,
    risk_level, summary, reasoning, analyzer, analyzed_at)
VALUES (%s, %s, %s, 'completed', %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET analysis_entry_id = EXCLUDED.analysis_entry_id,
    analysis_status = 'completed', risk_score = EXCLUDED.risk_score,
    risk_level = EXCLUDED.risk_level, summary = EXCLUDED.summary,
    reasoning = EXCLUDED.reasoning, analyzer = EXCLUDED.analyzer,
    analyzed_at = EXCLUDED.analyzed_at
"""
_CAMERA = """
INSERT INTO cameras AS t (id, name, folder, first_seen, last_seen, file_count, event_count)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET first_seen = LEAST(t.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen),
    file_count = t.file_count + EXCLUDED.file_count,
    event_count = t.event_count + EXCLUDED.event_count
"""
_DETECTION_COLUMNS = (
    "id, camera_id, detection_entry_id, object_index, file_id, file_entry_id, path, label, "
    "confidence, bbox_x, bbox_y, bbox_width, bbox_height, image_width, image_height, detector, "
    "captured_at"
)
# The COPY statements the floors (this write side and replay's) share.
COPY_CHECKPOINTS = "COPY projection_checkpoints (projection, stream, entry_id) FROM STDIN"
COPY_DETECTIONS = f"COPY detections ({_DETECTION_COLUMNS}) FROM STDIN"
COPY_MEMBERS = (
    "COPY event_detections (event_id, detection_entry_id, file_entry_id, camera_id, position) "
    "FROM STDIN"
)

# What `done_counts` reads: media files detected and events analysed.
DONE_SQL = (
    "SELECT (SELECT count(*) FROM media_files WHERE detection_status = 'completed'), "
    "(SELECT count(*) FROM events WHERE analysis_status = 'completed')"
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


async def copy_rows(cur: psycopg.AsyncCursor[Any], sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """Write `rows` by one COPY … FROM STDIN."""
    async with cur.copy(sql) as copy:
        for row in rows:
            await copy.write_row(row)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def file_body(camera: str, index: int) -> bytes:
    """A `file.observed`-like body."""
    now = now_iso()
    return orjson.dumps(
        {
            "camera_id": camera,
            "path": f"{camera}/IMG_{index:07d}.jpg",
            "sha256": uuid.uuid4().hex * 2,
            "size": 48_213,
            "mime": "image/jpeg",
            "media_kind": "image",
            "captured_at": now,
            "capture_source": "mtime",
            "observed_at": now,
        }
    )


async def publish_files(
    redis: Redis, names: StreamNames, cameras: Sequence[str], count: int, chunk: int = 500
) -> None:
    """`count` file entries over the cameras (round robin), by pipelined XADD."""
    for start in range(0, count, chunk):
        pipe = redis.pipeline(transaction=False)
        for index in range(start, min(count, start + chunk)):
            camera = cameras[index % len(cameras)]
            pipe.xadd(names.files(camera), {FIELD: file_body(camera, index)})
        await pipe.execute()


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
        await redis.xgroup_create(stream, group, id="0", mkstream=True)


class RawPipeline:
    """The floor's stages for some cameras, as asyncio tasks; `start()` … `stop()`."""

    def __init__(
        self,
        redis: Redis,
        conninfo: str,
        names: StreamNames,
        cameras: Sequence[str],
        *,
        max_objects: int = 50,
        fast_path: bool = False,
        count: int = 500,
        block_ms: int = 100,
    ) -> None:
        self._redis = redis
        self._conninfo = conninfo
        self._names = names
        self._cameras = list(cameras)
        self._max_objects = max_objects
        self._fast_path = fast_path
        self._count = count
        self._block_ms = block_ms
        self._consumer = f"floor-{uuid.uuid4().hex[:6]}"
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: list[psycopg.AsyncConnection[Any]] = []

    async def start(self) -> None:
        for camera in self._cameras:
            names = self._names
            await ensure_group(self._redis, names.files(camera), "detect")
            await ensure_group(self._redis, names.detections(camera), "batch")
            await ensure_group(self._redis, names.batches(camera), "analyze")
            for kind in _PROJECTED:
                await ensure_group(self._redis, names.stream(camera, kind), "project")
            conn = await psycopg.AsyncConnection.connect(self._conninfo)
            self._connections.append(conn)
            self._tasks += [
                asyncio.create_task(self._loop(camera, "detect", self._detect)),
                asyncio.create_task(self._loop(camera, "batch", self._batch)),
                asyncio.create_task(self._loop(camera, "analyze", self._analyze)),
                asyncio.create_task(self._project_loop(camera, conn)),
            ]

    async def stop(self) -> None:
        """Let every loop finish its read (at most `block_ms`), then close the connections."""
        self._stopping.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._block_ms / 1000 + 10)
            for task in pending:  # stuck in I/O: give up on it
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.warning("floor.loop_failed", exc_info=task.exception())
        self._tasks.clear()
        for conn in self._connections:
            await conn.close()
        self._connections.clear()

    # --- the write-side hops ------------------------------------------------------------------

    async def _loop(self, camera: str, group: str, hop: Any) -> None:
        source = {
            "detect": self._names.files,
            "batch": self._names.detections,
            "analyze": self._names.batches,
        }[group](camera)
        state: dict[str, Any] = {"members": [], "objects": 0}
        while not self._stopping.is_set():
            read: Any = await self._redis.xreadgroup(
                group, self._consumer, {source: ">"}, count=self._count, block=self._block_ms
            )
            for _stream, entries in read or ():
                if not entries:
                    continue
                pipe = self._redis.pipeline(transaction=True)
                hop(pipe, camera, entries, state)
                pipe.xack(source, group, *(entry_id for entry_id, _ in entries))
                await pipe.execute()

    def _detect(self, pipe: Any, camera: str, entries: Any, _state: dict[str, Any]) -> None:
        target = self._names.detections(camera)
        objects = list(FAST_OBJECTS if self._fast_path else OBJECTS)
        for entry_id, fields in entries:
            file = orjson.loads(fields[FIELD])
            body = {
                "camera_id": camera,
                "file_entry_id": _text(entry_id),
                "path": file["path"],
                "sha256": file["sha256"],
                "captured_at": file["captured_at"],
                "observed_at": file["observed_at"],
                "objects": objects,
                "image_width": 1920,
                "image_height": 1080,
                "detector": "fixed",
                "completed_at": now_iso(),
            }
            pipe.xadd(target, {FIELD: orjson.dumps(body)})

    def _batch(self, pipe: Any, camera: str, entries: Any, state: dict[str, Any]) -> None:
        target = self._names.batches(camera)
        for entry_id, fields in entries:
            detection = orjson.loads(fields[FIELD])
            state["members"].append(
                {
                    "entry_id": _text(entry_id),
                    "file_entry_id": detection["file_entry_id"],
                    "path": detection["path"],
                    "captured_at": detection["captured_at"],
                    "observed_at": detection["observed_at"],
                    "objects": detection["objects"],
                }
            )
            state["objects"] += len(detection["objects"])
            fast = any(
                o["label"] == "person" and o["confidence"] >= 0.9 for o in detection["objects"]
            )
            if fast or state["objects"] >= self._max_objects:
                members = state["members"]
                labels = sorted({o["label"] for m in members for o in m["objects"]})
                body = {
                    "camera_id": camera,
                    "batch_id": str(uuid.uuid5(_NAMESPACE, f"{camera}/{members[0]['entry_id']}")),
                    "detections": members,
                    "window_start": members[0]["observed_at"],
                    "window_end": members[-1]["observed_at"],
                    "close_reason": "fast_path" if fast else "max_size",
                    "detection_count": state["objects"],
                    "object_types": labels,
                    "max_confidence": max(o["confidence"] for m in members for o in m["objects"]),
                    "fast_path": fast,
                    "closed_at": members[-1]["observed_at"],
                }
                pipe.xadd(target, {FIELD: orjson.dumps(body)})
                state["members"], state["objects"] = [], 0
        key = self._names.open_batch(camera)
        if state["members"]:
            pipe.set(key, orjson.dumps(state["members"]))
        else:
            pipe.delete(key)

    def _analyze(self, pipe: Any, camera: str, entries: Any, _state: dict[str, Any]) -> None:
        target = self._names.analyses(camera)
        for entry_id, fields in entries:
            batch = orjson.loads(fields[FIELD])
            people = sum(o["label"] == "person" for m in batch["detections"] for o in m["objects"])
            score = min(100, 20 + 10 * people)
            body = {
                "camera_id": camera,
                "batch_id": batch["batch_id"],
                "batch_entry_id": _text(entry_id),
                "risk_score": score,
                "risk_level": "low" if score <= 29 else "medium" if score <= 59 else "high",
                "summary": f"{people} people",
                "reasoning": "fixed rule",
                "analyzer": "rules",
                "analyzed_at": now_iso(),
            }
            pipe.xadd(target, {FIELD: orjson.dumps(body)})

    # --- the projection -----------------------------------------------------------------------

    async def _project_loop(self, camera: str, conn: psycopg.AsyncConnection[Any]) -> None:
        streams: dict[Any, Any] = {self._names.stream(camera, kind): ">" for kind in _PROJECTED}
        while not self._stopping.is_set():
            read: Any = await self._redis.xreadgroup(
                "project", self._consumer, streams, count=self._count, block=self._block_ms
            )
            batches = [(_text(s), entries) for s, entries in read or () if entries]
            if not batches:
                continue
            async with conn.transaction():
                await project(conn, camera, batches, self._names)
            pipe = self._redis.pipeline(transaction=False)
            for stream, entries in batches:
                pipe.xack(stream, "project", *(entry_id for entry_id, _ in entries))
            await pipe.execute()


_PROJECTED = (StreamKind.FILES, StreamKind.DETECTIONS, StreamKind.BATCHES, StreamKind.ANALYSES)


def media_id(camera: str, file_entry_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{camera}/{file_entry_id}")


def _detection_id(camera: str, entry_id: str, index: int) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{camera}/{entry_id}/{index}")


def file_columns(body: dict[str, Any]) -> tuple[Any, ...]:
    """A `files` body's columns of its media_files row, `path` to `observed_at`."""
    return (
        body["path"],
        body["sha256"],
        body["size"],
        body["mime"],
        body["media_kind"],
        body["captured_at"],
        body["capture_source"],
        body["observed_at"],
    )


def detection_rows(
    camera: str,
    entry_id: str,
    file_id: Any,
    body: dict[str, Any],
    row_id: Callable[[str, str, int], Any],
    size: tuple[str, str],
) -> Iterator[tuple[Any, ...]]:
    """The detections rows (`_DETECTION_COLUMNS`) of a `detections` body's objects:
    `row_id(camera, entry_id, index)` gives each row's id; `size` names the keys of the box's
    width and height."""
    width, height = size
    for index, obj in enumerate(body["objects"]):
        box = obj["bbox"]
        yield (
            row_id(camera, entry_id, index),
            camera,
            entry_id,
            index,
            file_id,
            body["file_entry_id"],
            body["path"],
            obj["label"],
            obj["confidence"],
            box["x"],
            box["y"],
            box[width],
            box[height],
            body["image_width"],
            body["image_height"],
            body["detector"],
            body["captured_at"],
        )


def detected_columns(body: dict[str, Any]) -> tuple[Any, ...]:
    """A `detections` body's columns of its file's media_files row, `detector` to
    `detected_at`."""
    return (
        body["detector"],
        body["image_width"],
        body["image_height"],
        len(body["objects"]),
        body["completed_at"],
    )


def batch_columns(body: dict[str, Any]) -> tuple[Any, ...]:
    """A `batches` body's columns of its events row, `window_start` to `closed_at`."""
    return (
        body["window_start"],
        body["window_end"],
        body["close_reason"],
        body["detection_count"],
        body["object_types"],
        body["max_confidence"],
        body["fast_path"],
        body["closed_at"],
    )


def verdict_columns(body: dict[str, Any]) -> tuple[Any, ...]:
    """An `analyses` body's verdict columns of its events row, `risk_score` to `analyzer`."""
    return (
        body["risk_score"],
        body["risk_level"],
        body["summary"],
        body["reasoning"],
        body["analyzer"],
    )


def member_rows(event: Any, camera: str, body: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """The event_detections rows of a `batches` body."""
    return (
        (event, m["entry_id"], m["file_entry_id"], camera, position)
        for position, m in enumerate(body["detections"])
    )


async def project(
    conn: psycopg.AsyncConnection[Any],
    camera: str,
    batches: Iterable[tuple[str, Sequence[tuple[Any, dict[bytes, bytes]]]]],
    names: StreamNames,
) -> None:
    """Write the rows of entries of one camera's streams in the caller's transaction."""
    checkpoints: list[tuple[str, str, str]] = []
    files: list[tuple[Any, ...]] = []
    media: list[tuple[Any, ...]] = []
    detections: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    members: list[tuple[Any, ...]] = []
    analyses: list[tuple[Any, ...]] = []
    first = last = None
    for stream, entries in batches:
        kind = stream.rsplit(":", 1)[1]
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            checkpoints.append((PROJECTION, stream, entry_id))
            body = orjson.loads(fields[FIELD])
            if kind == "files":
                files.append((media_id(camera, entry_id), camera, entry_id, *file_columns(body)))
                first = first or body["observed_at"]
                last = body["observed_at"]
            elif kind == "detections":
                file_id = media_id(camera, body["file_entry_id"])
                media.append(
                    (
                        file_id,
                        camera,
                        body["file_entry_id"],
                        body["path"],
                        body["sha256"],
                        body["captured_at"],
                        body["observed_at"],
                        *detected_columns(body),
                    )
                )
                detections.extend(
                    detection_rows(
                        camera,
                        entry_id,
                        file_id,
                        body,
                        _detection_id,
                        ("w", "h"),
                    )
                )
            elif kind == "batches":
                event = uuid.UUID(body["batch_id"])
                events.append((event, camera, entry_id, *batch_columns(body)))
                members.extend(member_rows(event, camera, body))
            else:
                analyses.append(
                    (
                        uuid.UUID(body["batch_id"]),
                        camera,
                        entry_id,
                        *verdict_columns(body),
                        body["analyzed_at"],
                    )
                )
    async with conn.cursor() as cur:
        await copy_rows(cur, COPY_CHECKPOINTS, checkpoints)
        if files:
            await cur.executemany(_MEDIA_FILE, files)
        if media:
            await cur.executemany(_MEDIA_DETECTION, media)
        if detections:
            await copy_rows(cur, COPY_DETECTIONS, detections)
        if events:
            await cur.executemany(_EVENT_BATCH, events)
            await copy_rows(cur, COPY_MEMBERS, members)
        if analyses:
            await cur.executemany(_EVENT_ANALYSIS, analyses)
        if files or events:
            seen = first or now_iso()
            await cur.execute(
                _CAMERA, (camera, camera, camera, seen, last or seen, len(files), len(events))
            )


async def done_counts(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """(media files detected, events analysed) in the connection's schema."""
    async with conn.cursor() as cur:
        await cur.execute(DONE_SQL)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])

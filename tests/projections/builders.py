"""Entries built with the real schemas, and whole camera histories published to Redis."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from streams.envelope import DATA_FIELD, entry_fields
from streams.names import StreamNames
from streams.schemas import (
    AnalysisCompleted,
    AnalysisFailed,
    BatchClosed,
    BatchDetection,
    Box,
    CameraRegistered,
    DetectedObject,
    DetectionCompleted,
    DetectionFailed,
    Entry,
    EntryDead,
    FileObserved,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CAMERA = "front_door"
GARBAGE: dict[bytes, bytes] = {DATA_FIELD: b"\x00not an envelope"}


def at(seconds: float, base: datetime = T0) -> datetime:
    return base + timedelta(seconds=seconds)


def camera_registered(
    camera: str = CAMERA, *, name: str = "Front Door", when: datetime = T0
) -> CameraRegistered:
    return CameraRegistered(camera_id=camera, name=name, folder=name, registered_at=when)


def file_observed(
    n: int, camera: str = CAMERA, *, captured: datetime | None = None, size: int = 1000
) -> FileObserved:
    captured = captured or at(n)
    return FileObserved(
        camera_id=camera,
        path=f"Front Door/snap/MDAlarm_{n:04d}.jpg",
        sha256=f"{n:064x}",
        size=size,
        mime="image/jpeg",
        media_kind="image",
        captured_at=captured,
        capture_source="filename",
        observed_at=captured + timedelta(seconds=1),
    )


def detected(label: str = "person", confidence: float = 0.9, x: float = 10.0) -> DetectedObject:
    return DetectedObject(
        label=label, confidence=confidence, bbox=Box(x=x, y=20.0, width=30.5, height=40.25)
    )


def detection_completed(
    file: FileObserved,
    file_entry_id: str,
    objects: Sequence[DetectedObject] = (),
    camera: str = CAMERA,
) -> DetectionCompleted:
    return DetectionCompleted(
        camera_id=camera,
        file_entry_id=file_entry_id,
        path=file.path,
        sha256=file.sha256,
        media_kind=file.media_kind,
        captured_at=file.captured_at,
        observed_at=file.observed_at,
        objects=tuple(objects),
        image_width=640,
        image_height=480,
        detector="embedded",
        inference_ms=12.5,
        completed_at=file.observed_at + timedelta(seconds=1),
    )


def detection_failed(
    file: FileObserved, file_entry_id: str, camera: str = CAMERA
) -> DetectionFailed:
    return DetectionFailed(
        camera_id=camera,
        file_entry_id=file_entry_id,
        path=file.path,
        sha256=file.sha256,
        captured_at=file.captured_at,
        observed_at=file.observed_at,
        error="cannot identify image file",
        detector="embedded",
        failed_at=file.observed_at + timedelta(seconds=1),
    )


def batch_closed(
    batch_id: str,
    detections: Sequence[tuple[str, DetectionCompleted]],
    camera: str = CAMERA,
) -> BatchClosed:
    """A batch of (detection entry id, detection) pairs."""
    objects = [o for _, d in detections for o in d.objects]
    start = min(d.captured_at for _, d in detections)
    end = max(d.captured_at for _, d in detections)
    return BatchClosed(
        camera_id=camera,
        batch_id=batch_id,
        detections=tuple(
            BatchDetection(
                entry_id=entry_id,
                file_entry_id=d.file_entry_id,
                path=d.path,
                captured_at=d.captured_at,
                objects=d.objects,
            )
            for entry_id, d in detections
        ),
        window_start=start,
        window_end=end,
        close_reason="idle",
        detection_count=len(objects),
        object_types=tuple(sorted({o.label for o in objects})),
        max_confidence=max((o.confidence for o in objects), default=0.0),
        fast_path=False,
        closed_at=end + timedelta(seconds=30),
    )


def analysis_completed(
    batch: BatchClosed, batch_entry_id: str, score: int = 70, camera: str = CAMERA
) -> AnalysisCompleted:
    return AnalysisCompleted(
        camera_id=camera,
        batch_id=batch.batch_id,
        batch_entry_id=batch_entry_id,
        risk_score=score,
        risk_level="high" if score >= 60 else "low",
        summary=f"{len(batch.detections)} detections",
        reasoning="rules",
        analyzer="rules",
        model=None,
        prompt_hash=None,
        latency_ms=1.5,
        analyzed_at=batch.closed_at + timedelta(seconds=2),
    )


def analysis_failed(
    batch: BatchClosed, batch_entry_id: str, camera: str = CAMERA
) -> AnalysisFailed:
    return AnalysisFailed(
        camera_id=camera,
        batch_id=batch.batch_id,
        batch_entry_id=batch_entry_id,
        analyzer="llm",
        error="no JSON in the answer",
        failed_at=batch.closed_at + timedelta(seconds=2),
    )


def entry_dead(
    source_stream: str,
    entry_id: str,
    original: bytes | None,
    camera: str = CAMERA,
    when: datetime = T0,
) -> EntryDead:
    return EntryDead(
        camera_id=camera,
        source_stream=source_stream,
        entry_id=entry_id,
        group="detect",
        deliveries=5,
        last_error="exceeded max deliveries",
        original=None if original is None else base64.b64encode(original).decode(),
        dead_at=when,
    )


# --- publishing ---------------------------------------------------------------------------------


async def publish(
    redis: Redis,
    stream: str,
    entries: Iterable[Entry | Mapping[bytes, bytes]],
    ids: Iterable[str] | None = None,
) -> list[str]:
    """XADD entries (or raw field maps) in one pipeline; `ids` gives explicit ids."""
    id_list = list(ids) if ids is not None else None
    async with redis.pipeline(transaction=False) as pipe:
        for index, entry in enumerate(entries):
            fields = dict(entry) if isinstance(entry, Mapping) else entry_fields(entry)
            pipe.xadd(stream, fields, id=id_list[index] if id_list else "*")  # type: ignore[arg-type]
        return [i.decode() for i in await pipe.execute()]


@dataclass
class Story:
    """Every entry published for cameras, by stream, in stream order."""

    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, stream: str, ids: Iterable[str]) -> None:
        self.ids.setdefault(stream, []).extend(ids)

    @property
    def streams(self) -> list[str]:
        return list(self.ids)

    def count(self) -> int:
        return sum(len(ids) for ids in self.ids.values())


class _Ids:
    """Explicit, increasing ids `<ms>-<n>` per stream, or Redis's own when `ms` is None."""

    def __init__(self, ms: int | None) -> None:
        self._ms = ms
        self._next: dict[str, int] = {}

    def take(self, stream: str, count: int) -> list[str] | None:
        if self._ms is None:
            return None
        start = self._next.get(stream, 0)
        self._next[stream] = start + count
        return [f"{self._ms}-{start + i}" for i in range(count)]


async def publish_story(
    redis: Redis,
    names: StreamNames,
    camera: str = CAMERA,
    *,
    files: int = 9,
    first: int = 0,
    base: datetime = T0,
    id_ms: int | None = None,
    story: Story | None = None,
    register: bool = True,
) -> Story:
    """A camera's history: registration, files, their detections (every fourth fails), batches
    of three detections, one analysis per batch (the second one fails), one dead letter."""
    story = story or Story()
    ids = _Ids(id_ms)
    if register:
        stream = names.cameras
        story.add(
            stream,
            await publish(
                redis, stream, [camera_registered(camera, when=base)], ids.take(stream, 1)
            ),
        )
    observed = [
        file_observed(first + n, camera, captured=at(first + n, base)) for n in range(files)
    ]
    stream = names.files(camera)
    file_ids = await publish(redis, stream, observed, ids.take(stream, files))
    story.add(stream, file_ids)
    detections: list[DetectionCompleted | DetectionFailed] = []
    for n, (file, file_id) in enumerate(zip(observed, file_ids, strict=True)):
        if n % 4 == 3:
            detections.append(detection_failed(file, file_id, camera))
        else:
            objects = [detected("person", 0.9)] + ([detected("car", 0.6, x=50.0)] if n % 2 else [])
            detections.append(detection_completed(file, file_id, objects, camera))
    stream = names.detections(camera)
    detection_ids = await publish(redis, stream, detections, ids.take(stream, len(detections)))
    story.add(stream, detection_ids)
    completed = [
        (i, d)
        for i, d in zip(detection_ids, detections, strict=True)
        if isinstance(d, DetectionCompleted)
    ]
    batches = [
        batch_closed(str(uuid.uuid5(uuid.NAMESPACE_OID, f"{camera}/{group[0][0]}")), group, camera)
        for group in (completed[i : i + 3] for i in range(0, len(completed), 3))
    ]
    stream = names.batches(camera)
    batch_ids = await publish(redis, stream, batches, ids.take(stream, len(batches)))
    story.add(stream, batch_ids)
    analyses = [
        analysis_failed(b, i, camera) if n == 1 else analysis_completed(b, i, 40 + n, camera)
        for n, (i, b) in enumerate(zip(batch_ids, batches, strict=True))
    ]
    stream = names.analyses(camera)
    story.add(stream, await publish(redis, stream, analyses, ids.take(stream, len(analyses))))
    stream = names.dead(camera)
    original = entry_fields(observed[0])[DATA_FIELD]
    dead = entry_dead(names.files(camera), file_ids[0], original, camera, when=base)
    story.add(stream, await publish(redis, stream, [dead], ids.take(stream, 1)))
    return story

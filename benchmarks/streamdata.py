"""Realistic stream contents, written straight into Redis: what a camera's day leaves behind.

For each camera, groups of 25 files: 25 `file.observed`, 25 `detection.completed` (a car and a
person each), one `batch.closed` holding the 25 detections (closed at 50 objects) and its
`analysis.completed` — 52 entries per group — plus one `camera.registered` per camera. Entries
are HSI's own envelopes (headers with a `traceparent`) with bodies that HSI's schemas accept;
they are made from templates dumped by those schemas, so making a million takes seconds, and
their ids are explicit so that every reference between them (a detection's file, a batch's
detections, an analysis's batch) is right.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from streams.envelope import DATA_FIELD, encode
from streams.names import StreamNames

FILES_PER_GROUP = 25
ENTRIES_PER_GROUP = 2 * FILES_PER_GROUP + 2
BASE_MS = 1_767_000_000_000  # 2025-12-29: entry ids are explicit, in this millisecond range
START = datetime(2026, 1, 1, tzinfo=UTC)

_OBJECTS = [
    {
        "label": "car",
        "confidence": 0.82,
        "bbox": {"x": 120.0, "y": 340.0, "width": 420.0, "height": 260.0},
    },
    {
        "label": "person",
        "confidence": 0.61,
        "bbox": {"x": 900.0, "y": 300.0, "width": 140.0, "height": 380.0},
    },
]


@dataclass(frozen=True)
class Layout:
    """How many entries of which kind: `groups` groups of 25 files per camera."""

    cameras: tuple[str, ...]
    groups: int

    @classmethod
    def for_entries(cls, entries: int, camera_count: int) -> Layout:
        """The layout closest to `entries` stream entries over `camera_count` cameras."""
        groups = max(1, round(entries / (camera_count * ENTRIES_PER_GROUP)))
        return cls(tuple(f"cam_{index:02d}" for index in range(camera_count)), groups)

    @property
    def files(self) -> int:
        return len(self.cameras) * self.groups * FILES_PER_GROUP

    @property
    def events(self) -> int:
        return len(self.cameras) * self.groups

    @property
    def entries(self) -> int:
        """Every entry, the cameras' registrations included."""
        return len(self.cameras) * (self.groups * ENTRIES_PER_GROUP + 1)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _fields(kind: str, body: dict[str, Any]) -> dict[bytes, bytes]:
    trace = uuid.uuid4().hex
    headers = {
        "correlation_id": uuid.uuid4().hex,
        "content-type": "application/json",
        "type": kind,
        "traceparent": f"00-{trace}-{trace[:16]}-01",
    }
    return {DATA_FIELD: encode(orjson.dumps(body), headers)}


def camera_entries(
    names: StreamNames, camera: str
) -> Iterator[tuple[str, str, dict[bytes, bytes]]]:
    """(stream, entry id, fields) of one camera's entries, stream by stream in id order."""
    files = names.files(camera)
    detections = names.detections(camera)
    batches = names.batches(camera)
    analyses = names.analyses(camera)
    pending: list[dict[str, Any]] = []
    index = 0
    while True:
        base = BASE_MS + index
        moment = START + timedelta(seconds=index / 2)
        at = _iso(moment)
        file_id, detection_id = f"{base}-0", f"{base}-1"
        path = f"{camera}/snap/MDAlarm_{index:08d}.jpg"
        sha = uuid.uuid4().hex * 2
        yield (
            files,
            file_id,
            _fields(
                "file.observed",
                {
                    "type": "file.observed",
                    "schema_version": 1,
                    "camera_id": camera,
                    "path": path,
                    "sha256": sha,
                    "size": 48_213,
                    "mime": "image/jpeg",
                    "media_kind": "image",
                    "captured_at": at,
                    "capture_source": "filename",
                    "observed_at": at,
                },
            ),
        )
        yield (
            detections,
            detection_id,
            _fields(
                "detection.completed",
                {
                    "type": "detection.completed",
                    "schema_version": 1,
                    "camera_id": camera,
                    "file_entry_id": file_id,
                    "path": path,
                    "sha256": sha,
                    "media_kind": "image",
                    "captured_at": at,
                    "observed_at": at,
                    "objects": _OBJECTS,
                    "image_width": 1920,
                    "image_height": 1080,
                    "detector": "fixed",
                    "inference_ms": 0.0,
                    "frames": 1,
                    "completed_at": at,
                },
            ),
        )
        pending.append(
            {
                "entry_id": detection_id,
                "file_entry_id": file_id,
                "path": path,
                "captured_at": at,
                "objects": _OBJECTS,
                "at": at,
            }
        )
        index += 1
        if len(pending) < FILES_PER_GROUP:
            continue
        batch_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{camera}/{pending[0]['entry_id']}"))
        batch_entry = f"{base}-2"
        yield (
            batches,
            batch_entry,
            _fields(
                "batch.closed",
                {
                    "type": "batch.closed",
                    "schema_version": 1,
                    "camera_id": camera,
                    "batch_id": batch_id,
                    "detections": [
                        {k: v for k, v in member.items() if k != "at"} for member in pending
                    ],
                    "window_start": pending[0]["at"],
                    "window_end": pending[-1]["at"],
                    "close_reason": "max_size",
                    "detection_count": 2 * len(pending),
                    "object_types": ["car", "person"],
                    "max_confidence": 0.82,
                    "fast_path": False,
                    "closed_at": pending[-1]["at"],
                },
            ),
        )
        yield (
            analyses,
            f"{base}-3",
            _fields(
                "analysis.completed",
                {
                    "type": "analysis.completed",
                    "schema_version": 1,
                    "camera_id": camera,
                    "batch_id": batch_id,
                    "batch_entry_id": batch_entry,
                    "risk_score": 45,
                    "risk_level": "medium",
                    "summary": "A person and a car near the driveway.",
                    "reasoning": "person (0.61) with a car (0.82) in daylight",
                    "analyzer": "rules",
                    "model": None,
                    "prompt_hash": None,
                    "latency_ms": 0.2,
                    "analyzed_at": at,
                },
            ),
        )
        pending = []


async def write(redis: Redis, names: StreamNames, layout: Layout, *, chunk: int = 2000) -> int:
    """Write the layout's entries (pipelined XADD with explicit ids); returns how many."""
    written = 0
    for camera in layout.cameras:
        registered: dict[Any, Any] = _fields(
            "camera.registered",
            {
                "type": "camera.registered",
                "schema_version": 1,
                "camera_id": camera,
                "name": camera,
                "folder": camera,
                "registered_at": _iso(START),
            },
        )
        await redis.xadd(names.cameras, registered)
        await redis.sadd(names.camera_set, camera)
        written += 1
        entries = camera_entries(names, camera)
        total = layout.groups * ENTRIES_PER_GROUP
        while total > 0:
            pipe = redis.pipeline(transaction=False)
            for _ in range(min(chunk, total)):
                stream, entry_id, fields = next(entries)
                pipe.xadd(stream, dict[Any, Any](fields), id=entry_id)
            total -= min(chunk, total)
            written += len(await pipe.execute())
    return written


def streams_of(names: StreamNames, cameras: Sequence[str]) -> list[str]:
    """Every stream the layout fills, the shared cameras stream first."""
    streams = [names.cameras]
    for camera in cameras:
        streams += [
            names.files(camera),
            names.detections(camera),
            names.batches(camera),
            names.analyses(camera),
        ]
    return streams

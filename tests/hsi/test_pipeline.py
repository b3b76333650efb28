"""The write-side pipeline end to end on a real Redis: files → detections → batches → analyses."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from hsi.config import Settings
from hsi.pipeline import Pipeline, PipelineOptions
from streams.envelope import entry_fields, read_fields
from streams.names import Group, StreamNames
from streams.schemas import Entry, FileObserved
from tests.conftest import PHOTOS


def _settings(root: Path, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "foscam_base_path": root,
        "stream_prefix": prefix,
        "batch_window_seconds": 4,
        "batch_idle_timeout_seconds": 1,
        "stream_reclaim_idle_ms": 500,
        "stream_reclaim_interval_seconds": 0.2,
        "stream_block_ms": 100,
        "detection_confidence_threshold": 0.35,
        "timezone": "UTC",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def _publish_file(
    redis: Redis, names: StreamNames, root: Path, camera_folder: str, photo: str, name: str
) -> str:
    folder = root / camera_folder
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copy(PHOTOS / photo, target)
    data = target.read_bytes()
    now = datetime.now(UTC)
    camera = "front_door"
    await redis.sadd(names.camera_set, camera)
    entry = FileObserved(
        camera_id=camera,
        path=f"{camera_folder}/{name}",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mime="image/jpeg",
        media_kind="image",
        captured_at=now,
        capture_source="mtime",
        observed_at=now,
    )
    entry_id = await redis.xadd(names.files(camera), entry_fields(entry))
    return entry_id.decode()


async def _entries(redis: Redis, stream: str) -> list[tuple[str, Entry]]:
    rows = await redis.xrange(stream)
    return [(i.decode(), read_fields(f)[0]) for i, f in rows]


async def _wait_for(
    redis: Redis, stream: str, count: int, seconds: float = 30
) -> list[tuple[str, Entry]]:
    async with asyncio.timeout(seconds):
        while True:
            found = await _entries(redis, stream)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


@pytest.fixture
async def pipeline(
    redis_url: str, key_prefix: str, tmp_path: Path, redis_client: Redis
) -> AsyncIterator[Pipeline]:
    settings = _settings(tmp_path / "cameras", key_prefix)
    pipe = Pipeline(settings, redis_url, PipelineOptions(discovery_interval_seconds=0.2))
    await pipe.start()
    yield pipe
    await pipe.stop()


async def test_files_become_analyses(
    pipeline: Pipeline, redis_client: Redis, tmp_path: Path
) -> None:
    """Two photos with a person and one without: detections for all, one batch, one analysis."""
    names = pipeline.names
    root = tmp_path / "cameras"
    ids = [
        await _publish_file(
            redis_client, names, root, "Front Door", "person-astronaut.jpg", "a.jpg"
        ),
        await _publish_file(
            redis_client, names, root, "Front Door", "person-cameraman.jpg", "b.jpg"
        ),
        await _publish_file(redis_client, names, root, "Front Door", "empty-rocket.jpg", "c.jpg"),
    ]
    detections = await _wait_for(redis_client, names.detections("front_door"), 3)
    assert [e.file_entry_id for _, e in detections] == ids  # type: ignore[union-attr]
    labels = [{o.label for o in e.objects} for _, e in detections]  # type: ignore[union-attr]
    assert "person" in labels[0]
    assert "person" in labels[1]
    assert labels[2] == set()
    batches = await _wait_for(redis_client, names.batches("front_door"), 1)
    assert len(batches) == 1
    batch = batches[0][1]
    assert batch.type == "batch.closed"
    assert [d.entry_id for d in batch.detections] == [detections[0][0], detections[1][0]]
    assert batch.close_reason in {"idle", "window"}
    analyses = await _wait_for(redis_client, names.analyses("front_door"), 1)
    analysis = analyses[0][1]
    assert analysis.type == "analysis.completed"
    assert analysis.batch_id == batch.batch_id
    assert 0 <= analysis.risk_score <= 100
    await pipeline.drain(10)
    for stream, group in [
        (names.files("front_door"), Group.DETECT),
        (names.detections("front_door"), Group.BATCH),
        (names.batches("front_door"), Group.ANALYZE),
    ]:
        pending = await redis_client.xpending(stream, group.value)
        assert pending["pending"] == 0


async def test_corrupt_file_is_a_failed_detection(
    pipeline: Pipeline, redis_client: Redis, tmp_path: Path
) -> None:
    """A file that does not decode becomes detection.failed at once, and no batch."""
    names = pipeline.names
    root = tmp_path / "cameras"
    entry_id = await _publish_file(
        redis_client, names, root, "Front Door", "cat-chelsea.jpg", "x.jpg"
    )
    (root / "Front Door" / "x.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    detections = await _wait_for(redis_client, names.detections("front_door"), 1)
    failed = detections[0][1]
    assert failed.type == "detection.failed"
    assert failed.file_entry_id == entry_id
    await pipeline.drain(10)
    assert await redis_client.xlen(names.batches("front_door")) == 0

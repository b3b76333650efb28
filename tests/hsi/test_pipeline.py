"""The write-side pipeline end to end on a real Redis: files → detections → batches → analyses."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from hsi.app.pipeline import Pipeline, PipelineOptions
from hsi.infra.telemetry import TelemetryConfig, render_metrics, reset_telemetry, setup_telemetry
from hsi.settings.model import Settings
from streams.envelope import entry_fields, read_fields
from streams.names import Group, StreamNames
from streams.schemas import Entry, FileObserved
from tests.conftest import PHOTOS
from tests.fakes.server import free_port
from tests.observability.support import samples
from tests.waiting import wait_until


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


async def test_entry_of_a_dead_consumer_is_reclaimed_once(
    redis_url: str, key_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    """An entry read by a consumer that died before XACK is processed once, by another."""
    settings = _settings(tmp_path / "cameras", key_prefix)
    names = StreamNames(key_prefix)
    root = tmp_path / "cameras"
    entry_id = await _publish_file(
        redis_client, names, root, "Front Door", "cat-chelsea.jpg", "c.jpg"
    )
    stream = names.files("front_door")
    await redis_client.xgroup_create(stream, Group.DETECT.value, id="0", mkstream=True)
    taken = await redis_client.xreadgroup(
        Group.DETECT.value, "crashed-worker", {stream: ">"}, count=10
    )
    assert taken[0][1][0][0].decode() == entry_id  # read, then the worker "dies" without XACK
    pipe = Pipeline(settings, redis_url, PipelineOptions(stages=(Group.DETECT,)))
    await pipe.start()
    try:
        detections = await _wait_for(redis_client, names.detections("front_door"), 1)
        await pipe.drain(10)
    finally:
        await pipe.stop()
    assert [e.file_entry_id for _, e in detections] == [entry_id]  # type: ignore[union-attr]
    assert await redis_client.xlen(names.detections("front_door")) == 1
    assert (await redis_client.xpending(stream, Group.DETECT.value))["pending"] == 0


async def test_unreachable_detector_ends_dead_and_dlq_retry_recovers(
    redis_url: str, key_prefix: str, tmp_path: Path, redis_client: Redis
) -> None:
    """Detector down: the entry is retried, then buried; once it is back, retry processes it."""
    from streams.dlq import list_dead, retry_dead
    from tests.fakes.rtdetr import serve_fake_rtdetr

    names = StreamNames(key_prefix)
    root = tmp_path / "cameras"
    with serve_fake_rtdetr() as (detector, url):
        detector.fail_times(1000, status=503)
        settings = _settings(
            root,
            key_prefix,
            detector_backend="rtdetr",
            rtdetr_url=url,
            ai_max_retries=0,
            stream_max_deliveries=3,
            ai_circuit_failure_threshold=1000,
        )
        pipe = Pipeline(settings, redis_url, PipelineOptions(stages=(Group.DETECT,)))
        await pipe.start()
        try:
            entry_id = await _publish_file(
                redis_client, names, root, "Front Door", "cat-chelsea.jpg", "c.jpg"
            )
            good_neighbour = await _wait_for(redis_client, names.dead("front_door"), 1)
            dead = (await list_dead(redis_client, names, ["front_door"], 10))[0]
            assert dead.entry_id == entry_id
            assert dead.deliveries == 3
            assert "503" in dead.last_error or "Unavailable" in dead.last_error
            assert await redis_client.xlen(names.detections("front_door")) == 0
            detector.reset()
            await retry_dead(redis_client, names, "front_door", good_neighbour[0][0])
            detections = await _wait_for(redis_client, names.detections("front_door"), 1)
        finally:
            await pipe.stop()
    assert detections[0][1].type == "detection.completed"
    assert await redis_client.xlen(names.dead("front_door")) == 0


@pytest.fixture
def metrics() -> Iterator[None]:
    """HSI's telemetry (metrics on) for this test process; reset afterwards."""
    reset_telemetry()
    setup_telemetry(TelemetryConfig(service_name="hsi-test"))
    yield
    reset_telemetry()


def _detected(exposition: bytes) -> int:
    """Files the detect stage of a process handled, from its Prometheus exposition."""
    wanted = {("stage", "detect"), ("camera", "front_door"), ("outcome", "ok")}
    return int(
        sum(
            value
            for (name, found), value in samples(exposition).items()
            if name == "hsi_entries_processed_total" and wanted <= found
        )
    )


async def test_two_processes_split_the_work_without_duplicates(
    redis_url: str, key_prefix: str, tmp_path: Path, redis_client: Redis, metrics: None
) -> None:
    """An in-process detect worker and an `hsi worker` process share one camera's files exactly:
    each handles some (its own /metrics counts say so), together all, none twice."""
    import os
    import subprocess
    import sys

    names = StreamNames(key_prefix)
    root = tmp_path / "cameras"
    settings = _settings(root, key_prefix)
    await redis_client.sadd(names.camera_set, "front_door")
    worker_metrics = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {n.upper() for n in Settings.model_fields}
    }
    env.update(
        REDIS_URL=redis_url,
        STREAM_PREFIX=key_prefix,
        FOSCAM_BASE_PATH=str(root),
        DATA_DIR=str(tmp_path / "data"),
        STREAM_BLOCK_MS="100",
        STREAM_READ_COUNT="2",
        API_HOST="127.0.0.1",
        METRICS_PORT=str(worker_metrics),
    )
    pipe = Pipeline(
        settings.model_copy(update={"stream_read_count": 2}),
        redis_url,
        PipelineOptions(stages=(Group.DETECT,)),
    )
    await pipe.start()
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "hsi.cli", "worker", "--stage", "detect"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    counts: dict[str, int] = {}
    try:
        # The process subscribes before any file arrives (it starts slowly on a busy machine;
        # files published earlier would all go to the in-process worker).
        await wait_until(
            lambda: "pipeline.started" in log.read_text(errors="replace"), "the worker to start"
        )
        photos = ["person-astronaut.jpg", "cat-chelsea.jpg", "empty-coffee.jpg", "empty-rocket.jpg"]
        ids = [
            await _publish_file(redis_client, names, root, "Front Door", photos[i % 4], f"{i}.jpg")
            for i in range(24)
        ]
        await _wait_for(redis_client, names.detections("front_door"), 24, seconds=60)
        await pipe.drain(20)

        async def counted() -> bool:
            async with httpx.AsyncClient() as http:
                response = await http.get(f"http://127.0.0.1:{worker_metrics}/metrics")
            counts["worker"] = _detected(response.content)
            counts["here"] = _detected(render_metrics()[0])
            return counts["worker"] + counts["here"] >= len(ids)

        await wait_until(counted, "both processes to count every file")
    finally:
        await pipe.stop()
        worker.send_signal(2)
        worker.wait(timeout=30)
        output = log.read_text(errors="replace")
    # A file both handled (a reclaim of a slow one) counts in both; it is detected only once.
    assert counts["here"] > 0, counts
    assert counts["worker"] > 0, (counts, output)
    # Read again once both have stopped: nothing was detected twice, nothing is left pending.
    detections = await _entries(redis_client, names.detections("front_door"))
    processed = [e.file_entry_id for _, e in detections]  # type: ignore[union-attr]
    assert sorted(processed) == sorted(ids), output
    files = await redis_client.xpending(names.files("front_door"), Group.DETECT.value)
    assert files["pending"] == 0
    assert not (tmp_path / "data" / "postgres").exists()  # a write-side worker needs no database

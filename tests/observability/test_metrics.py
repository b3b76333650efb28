"""The `hsi_*` metrics of a small run, the stream-health gauges, and a worker's own /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.pipeline import StreamGauges
from hsi.app.runner import MetricsServerError, serve_metrics
from hsi.infra.telemetry import register_stream_gauges, render_metrics
from streams.groups import ensure_group
from streams.names import SHARED, Group, StreamKind, StreamNames
from streams.schemas import FileObserved
from tests.fakes.server import free_port
from tests.observability.support import CAMERA, labels, run_pipeline, samples
from tests.waiting import wait_until


def _stage(stage: str, outcome: str = "ok", camera: str = CAMERA) -> frozenset[tuple[str, str]]:
    return labels(stage=stage, camera=camera, outcome=outcome)


async def test_counts_match_the_files_processed(
    spans: InMemorySpanExporter,
    redis_client: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    engine: AsyncEngine,
    key_prefix: str,
    root: Path,
) -> None:
    """Three new files and a copy: every stage's counters, histograms and gauges say so."""
    run = await run_pipeline(
        redis=redis_client,
        redis_url=redis_url,
        database_url=database_url,
        db_schema=db_schema,
        engine=engine,
        prefix=key_prefix,
        root=root,
    )
    got = samples(run.exposition)
    processed = "hsi_entries_processed_total"
    assert got[(processed, _stage("watch"))] == 3
    assert got[(processed, _stage("watch", "skipped"))] == 1
    assert got[("hsi_dedupe_hits_total", labels(camera=CAMERA))] == 1
    assert got[(processed, _stage("detect"))] == 3
    assert got[(processed, _stage("batch"))] == 3
    assert got[(processed, _stage("analyze"))] == 1
    # files 3 + detections 3 + batch 1 + analysis 1; the registration on the shared stream.
    assert got[(processed, _stage("project"))] == 8
    assert got[(processed, _stage("project", camera=SHARED))] == 1
    assert not any(
        name == processed and dict(label)["outcome"] in {"failed", "dead"} for name, label in got
    )
    # One duration per batch a stage handled: the entries came in one batch or several.
    assert 1 <= got[("hsi_stage_duration_seconds_count", _stage("detect"))] <= 3
    assert 1 <= got[("hsi_stage_duration_seconds_count", _stage("project"))] <= 8
    assert got[("hsi_stage_duration_seconds_count", _stage("watch"))] == 3
    ai = "hsi_ai_request_duration_seconds_count"
    assert got[(ai, labels(backend="embedded", outcome="ok"))] == 3
    assert got[(ai, labels(backend="rules", outcome="ok"))] == 1
    assert got[("hsi_detections_processed_total", labels(camera=CAMERA, label="person"))] >= 2
    batch_sizes = [
        value
        for (name, label), value in got.items()
        if name == "hsi_batch_size_count" and dict(label)["camera"] == CAMERA
    ]
    assert batch_sizes == [1]
    events = [v for (n, _), v in got.items() if n == "hsi_events_created_total"]
    assert events == [1]
    e2e = labels(camera=CAMERA)
    assert got[("hsi_end_to_end_latency_seconds_count", e2e)] == 1
    assert 0 < got[("hsi_end_to_end_latency_seconds_sum", e2e)] < 60

    names = run.names
    files = labels(stream=names.files(CAMERA), group="detect", camera=CAMERA)
    assert got[("hsi_stream_length", files)] == 3
    assert got[("hsi_stream_group_lag", files)] == 0
    assert got[("hsi_stream_pending", files)] == 0
    assert got[("hsi_stream_oldest_pending_age_seconds", files)] == 0
    dead = [
        value
        for (name, label), value in got.items()
        if name == "hsi_stream_dead_letters" and dict(label)["stream"] == names.dead(CAMERA)
    ]
    assert dead == [0]
    assert got[("hsi_projector_lag", frozenset())] == 0
    # After stop the pipeline's stream gauges are gone; the counters stay.
    after = samples()
    assert not any(name.startswith("hsi_stream_") for name, _ in after)
    assert after[(processed, _stage("detect"))] == 3


def _file(n: int) -> FileObserved:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return FileObserved(
        camera_id=CAMERA,
        path=f"Front Door/{n}.jpg",
        sha256=f"{n:064x}",
        size=1000,
        mime="image/jpeg",
        media_kind="image",
        captured_at=now,
        capture_source="mtime",
        observed_at=now,
    )


STUCK_MS = 250


async def _oldest_idle_ms(redis: Redis, stream: str) -> int:
    """How long group detect's oldest pending entry has been waiting, as Redis says."""
    (oldest,) = await redis.xpending_range(stream, Group.DETECT.value, "-", "+", 1)
    return int(oldest["time_since_delivered"])


async def test_stream_gauges_follow_a_stopped_consumers_growing_lag(
    spans: InMemorySpanExporter, redis_client: Redis, key_prefix: str
) -> None:
    """Entries a group does not consume show as growing lag; unacked reads as pending, aged as
    long as Redis says the oldest has waited."""
    from streams.envelope import entry_fields

    names = StreamNames(key_prefix)
    stream = names.files(CAMERA)
    await ensure_group(redis_client, stream, Group.DETECT.value)
    gauges = StreamGauges(
        redis_client,
        names,
        lambda: [(CAMERA, StreamKind.FILES, Group.DETECT.value), (CAMERA, StreamKind.DEAD, "")],
    )
    unregister = register_stream_gauges(gauges.snapshot)
    key = labels(stream=stream, group="detect", camera=CAMERA)
    try:
        for n in range(3):
            await redis_client.xadd(stream, entry_fields(_file(n)))  # type: ignore[arg-type]
        await gauges.refresh()
        got = samples()
        assert got[("hsi_stream_length", key)] == 3
        assert got[("hsi_stream_group_lag", key)] == 3
        assert got[("hsi_stream_pending", key)] == 0

        for n in range(3, 7):
            await redis_client.xadd(stream, entry_fields(_file(n)))  # type: ignore[arg-type]
        # A consumer reads two entries and stops before acknowledging them; they wait long
        # enough that their age cannot be mistaken for 0 (the stuck-consumer signal).
        await redis_client.xreadgroup(Group.DETECT.value, "stopped", {stream: ">"}, count=2)

        async def stuck() -> bool:
            return await _oldest_idle_ms(redis_client, stream) >= STUCK_MS

        await wait_until(stuck, f"the pending entries to be idle {STUCK_MS} ms")
        idle_before = await _oldest_idle_ms(redis_client, stream)
        await gauges.refresh()
        idle_after = await _oldest_idle_ms(redis_client, stream)
        got = samples()
        assert got[("hsi_stream_length", key)] == 7
        assert got[("hsi_stream_group_lag", key)] == 5
        assert got[("hsi_stream_pending", key)] == 2
        age = got[("hsi_stream_oldest_pending_age_seconds", key)]
        assert idle_before / 1000 <= age <= idle_after / 1000
        # No dead stream yet: no dead letters.
        dead = labels(stream=names.dead(CAMERA), camera=CAMERA)
        assert got[("hsi_stream_dead_letters", dead)] == 0
    finally:
        unregister()


async def test_projector_lag_sums_group_project(
    spans: InMemorySpanExporter, redis_client: Redis, key_prefix: str
) -> None:
    """`hsi_projector_lag` is lag + pending of group `project` over the reported streams."""
    from streams.envelope import entry_fields

    names = StreamNames(key_prefix)
    for kind in (StreamKind.FILES, StreamKind.DETECTIONS):
        await ensure_group(redis_client, names.stream(CAMERA, kind), Group.PROJECT.value)
    for n in range(2):
        await redis_client.xadd(names.files(CAMERA), entry_fields(_file(n)))  # type: ignore[arg-type]
    await redis_client.xadd(names.detections(CAMERA), entry_fields(_file(9)))  # type: ignore[arg-type]
    gauges = StreamGauges(
        redis_client,
        names,
        lambda: [
            (CAMERA, StreamKind.FILES, Group.PROJECT.value),
            (CAMERA, StreamKind.DETECTIONS, Group.PROJECT.value),
        ],
    )
    unregister = register_stream_gauges(gauges.snapshot)
    try:
        await gauges.refresh()
        assert samples()[("hsi_projector_lag", frozenset())] == 3
    finally:
        unregister()


async def test_a_worker_serves_its_own_metrics(spans: InMemorySpanExporter) -> None:
    """`serve_metrics` answers /metrics with this process's exposition; a taken port is an
    error that names METRICS_PORT."""
    from hsi.infra.telemetry import instruments

    instruments().dedupe_hits.add(1, {"camera": "porch"})
    port = free_port()
    stop = serve_metrics("127.0.0.1", port)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        got = samples(response.content)
        assert got[("hsi_dedupe_hits_total", labels(camera="porch"))] == 1
        assert response.content.count(b"# TYPE hsi_dedupe_hits_total") == 1
        with pytest.raises(MetricsServerError, match="METRICS_PORT"):
            serve_metrics("127.0.0.1", port)
    finally:
        stop()
    body, _ = render_metrics()
    assert b"hsi_dedupe_hits_total" in body

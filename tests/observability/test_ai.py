"""AI requests as child spans with model and token counts, and their metrics per backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from streams.analyzers import build_analyzer
from streams.analyzers.llm import LLMConfig
from streams.contract import StreamEntry
from streams.envelope import HEADER_TRACEPARENT, entry_fields, read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import BatchClosed, BatchDetection, Box, DetectedObject
from streams.stages.analyze import AnalyzeStage
from streams.tracing import HEADER_OBSERVED_AT
from tests.fakes.llm import serve_fake_llm
from tests.observability.support import CAMERA, labels, samples

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OBSERVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _batch() -> BatchClosed:
    person = DetectedObject(label="person", confidence=0.8, bbox=Box(x=1, y=2, width=30, height=60))
    return BatchClosed(
        camera_id=CAMERA,
        batch_id="b-1",
        detections=(
            BatchDetection(
                entry_id="1-0",
                file_entry_id="0-1",
                path="Front Door/a.jpg",
                captured_at=OBSERVED,
                objects=(person,),
            ),
        ),
        window_start=OBSERVED,
        window_end=OBSERVED + timedelta(seconds=5),
        close_reason="idle",
        detection_count=1,
        object_types=("person",),
        max_confidence=0.8,
        fast_path=False,
        closed_at=OBSERVED + timedelta(seconds=35),
    )


async def _handle(redis: Redis, names: StreamNames, stage: AnalyzeStage) -> Any:
    stream = names.batches(CAMERA)
    await ensure_group(redis, stream, Group.ANALYZE.value)
    headers = {HEADER_TRACEPARENT: TRACEPARENT, HEADER_OBSERVED_AT: OBSERVED.isoformat()}
    await redis.xadd(stream, entry_fields(_batch(), headers))  # type: ignore[arg-type]
    reply: Any = await redis.xreadgroup(Group.ANALYZE.value, "t", {stream: ">"})
    entries: list[StreamEntry] = [(i.decode(), f) for i, f in reply[0][1]]
    return await stage.handle(stream, entries)


async def test_ai_analyze_is_a_child_span_with_model_and_tokens(
    spans: InMemorySpanExporter, redis_client: Redis, key_prefix: str
) -> None:
    """The analyze span continues the batch's trace; ai.analyze under it names the model and
    the token counts; the analysis carries the analyze span and the batch's observed_at."""
    names = StreamNames(key_prefix)
    with serve_fake_llm() as (_llm, url):
        analyzer = build_analyzer("llm", llm=LLMConfig(base_url=url, model="nemotron"))
        try:
            stage = AnalyzeStage(redis=redis_client, names=names, analyzer=analyzer)
            result = await _handle(redis_client, names, stage)
        finally:
            await analyzer.aclose()
    assert not result.failed
    finished = {s.name: s for s in spans.get_finished_spans()}
    analyze, ai = finished["analyze"], finished["ai.analyze"]
    assert f"{analyze.context.trace_id:032x}" == TRACE_ID
    assert analyze.parent is not None
    assert f"{analyze.parent.span_id:016x}" == PARENT_ID
    assert ai.parent is not None
    assert ai.parent.span_id == analyze.context.span_id
    attributes = dict(ai.attributes or {})
    assert attributes["hsi.ai.backend"] == "llm"
    assert attributes["gen_ai.request.model"] == "fake-model"
    assert int(attributes["gen_ai.usage.input_tokens"]) > 0  # type: ignore[call-overload]
    assert int(attributes["gen_ai.usage.output_tokens"]) > 0  # type: ignore[call-overload]
    assert float(attributes["hsi.ai.latency_ms"]) > 0  # type: ignore[arg-type]
    ((_, fields),) = await redis_client.xrange(names.analyses(CAMERA))
    _, headers = read_fields(fields)
    assert headers[HEADER_TRACEPARENT] == (f"00-{TRACE_ID}-{analyze.context.span_id:016x}-01")
    assert headers[HEADER_OBSERVED_AT] == OBSERVED.isoformat()
    got = samples()
    ai_ok = labels(backend="llm", outcome="ok")
    assert got[("hsi_ai_request_duration_seconds_count", ai_ok)] == 1
    created = [v for (n, _), v in got.items() if n == "hsi_events_created_total"]
    assert created == [1]


async def test_an_unreachable_model_counts_as_an_ai_error_and_a_failed_entry(
    spans: InMemorySpanExporter, redis_client: Redis, key_prefix: str
) -> None:
    """A 503 from the model: an AI error of backend llm, the entry failed (left pending)."""
    names = StreamNames(key_prefix)
    with serve_fake_llm() as (llm, url):
        llm.fail_times(100, status=503)
        config = LLMConfig(base_url=url, max_retries=0, circuit_failure_threshold=100)
        analyzer = build_analyzer("llm", llm=config)
        try:
            stage = AnalyzeStage(redis=redis_client, names=names, analyzer=analyzer)
            result = await _handle(redis_client, names, stage)
        finally:
            await analyzer.aclose()
    assert len(result.failed) == 1
    got = samples()
    errors = labels(backend="llm", error_type="AnalyzerUnavailableError")
    assert got[("hsi_ai_request_errors_total", errors)] == 1
    assert got[("hsi_ai_request_duration_seconds_count", labels(backend="llm", outcome="error"))]
    failed = labels(stage="analyze", camera=CAMERA, outcome="failed")
    assert got[("hsi_entries_processed_total", failed)] == 1
    stage_errors = labels(stage="analyze", error_type="AnalyzerUnavailableError")
    assert got[("hsi_pipeline_errors_total", stage_errors)] == 1
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["analyze"].attributes is not None
    assert finished["analyze"].attributes["hsi.outcome"] == "failed"
    assert not finished["ai.analyze"].status.is_ok
    assert await redis_client.xlen(names.analyses(CAMERA)) == 0

"""The API's observability: /api/pipeline/latency, /asyncapi.json, traced requests, docs export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.responses import BadParameter
from hsi.api.routes.pipeline import parse_window
from hsi.app.docs import write_docs
from hsi.app.pipeline import ALL_STAGES, stage_inputs
from streams.names import StreamNames
from tests.observability.support import api_config, run_pipeline, serve

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_latency_reports_percentiles_after_a_run(
    spans: InMemorySpanExporter,
    redis_client: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    engine: AsyncEngine,
    key_prefix: str,
    root: Path,
    tmp_path: Path,
) -> None:
    """After one event, every stage and end to end have samples and ordered percentiles; the
    request itself is a server span continuing the caller's trace."""
    await run_pipeline(
        redis=redis_client,
        redis_url=redis_url,
        database_url=database_url,
        db_schema=db_schema,
        engine=engine,
        prefix=key_prefix,
        root=root,
    )
    spans.clear()
    config = api_config(database_url, db_schema, redis_url, key_prefix, tmp_path)
    async with serve(config) as client:
        response = await client.get(
            "/api/pipeline/latency", params={"window": "15m"}, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        empty = (await client.get("/api/pipeline/latency?camera_id=garage")).json()
        bad = await client.get("/api/pipeline/latency?window=forever")
    assert body["window_seconds"] == 900
    assert body["source"] == "projection"
    counts = {stage: body["stages"][stage]["count"] for stage in body["stages"]}
    assert counts == {"detect": 3, "batch": 1, "analyze": 1, "project": 1}
    end_to_end = body["end_to_end"]
    assert end_to_end["count"] == 1
    for figures in (*body["stages"].values(), end_to_end):
        assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"]
    assert end_to_end["p50"] >= body["stages"]["analyze"]["p50"]
    assert end_to_end["p50"] < 60
    assert empty["end_to_end"] == {"count": 0, "p50": None, "p95": None, "p99": None}
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "window"

    requests = [s for s in spans.get_finished_spans() if s.name == "GET /api/pipeline/latency"]
    assert len(requests) == 3
    (server,) = [s for s in requests if s.parent is not None]
    assert server.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert server.parent is not None
    assert server.parent.span_id == int("b7ad6b7169203331", 16)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 900), ("900", 900), ("15m", 900), ("2h", 7200), ("1d", 86400), ("60s", 60)],
)
def test_window_takes_seconds_or_a_unit(value: str | None, seconds: int) -> None:
    """`window` is seconds or a number with s/m/h/d."""
    assert parse_window(value) == seconds


@pytest.mark.parametrize("value", ["", "15x", "-5", "59", "8d", "1.5h"])
def test_window_outside_the_range_or_malformed_is_refused(value: str) -> None:
    """Windows below a minute, above a week, or not a duration are a 400."""
    with pytest.raises(BadParameter):
        parse_window(value)


async def test_asyncapi_lists_every_stream_and_group(
    redis_url: str, database_url: str, db_schema: str, key_prefix: str, tmp_path: Path
) -> None:
    """/asyncapi.json names each stream, its writer, and each group that reads it."""
    config = api_config(database_url, db_schema, redis_url, key_prefix, tmp_path)
    async with serve(config) as client:
        doc = (await client.get("/asyncapi.json")).json()
        openapi = (await client.get("/openapi.json")).json()
    assert doc["asyncapi"].startswith("3.")
    names = StreamNames(key_prefix)
    reads = {
        (c["bindings"]["redis"]["channel"], c["bindings"]["redis"]["groupName"])
        for c in doc["channels"].values()
        if c["bindings"]["redis"]["method"] == "xreadgroup"
    }
    expected = set()
    for group in ALL_STAGES:
        for kind in stage_inputs(group):
            stream = names.cameras if kind.value == "cameras" else names.stream("camera", kind)
            expected.add((stream, group.value))
    assert reads == expected
    writes = {
        c["address"] for c in doc["channels"].values() if c["bindings"]["redis"]["method"] == "xadd"
    }
    assert writes == {stream for stream, _ in expected}
    schemas = doc["components"]["schemas"]
    for model in ("FileObserved", "DetectionCompleted", "BatchClosed", "AnalysisCompleted"):
        assert model in schemas
    assert "/asyncapi.json" in openapi["paths"]
    assert "/api/pipeline/latency" in openapi["paths"]


def test_write_docs_writes_both_documents(tmp_path: Path) -> None:
    """`write_docs` (behind `hsi docs`) writes openapi.json and asyncapi.json."""
    written = write_docs(tmp_path / "docs")
    assert sorted(p.name for p in written) == ["asyncapi.json", "openapi.json"]
    openapi = json.loads((tmp_path / "docs" / "openapi.json").read_text())
    asyncapi = json.loads((tmp_path / "docs" / "asyncapi.json").read_text())
    assert openapi["openapi"].startswith("3.1")
    assert any(c["address"] == "hsi:{camera}:files" for c in asyncapi["channels"].values())

"""One trace per camera file (watch → detect → project), one per event (batch → analyze →
project) linked to its files' traces; AI calls as child spans; replays make no spans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.replay import rebuild
from streams.names import StreamNames
from streams.watch.outcomes import OutcomeKind
from streams.watch.watcher import Watcher
from tests.observability.support import CAMERA, FAST, put_files, run_pipeline


def _named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _attr(span: ReadableSpan, key: str) -> object:
    assert span.attributes is not None
    return span.attributes.get(key)


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def _one(spans: Sequence[ReadableSpan], name: str, **attributes: object) -> ReadableSpan:
    found = [s for s in _named(spans, name) if all(_attr(s, k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, [s.attributes for s in _named(spans, name)])
    return found[0]


async def test_one_file_is_one_connected_trace_and_an_event_links_its_files(
    spans: InMemorySpanExporter,
    redis_client: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    engine: AsyncEngine,
    key_prefix: str,
    root: Path,
) -> None:
    """Each file's trace runs watch → detect (→ ai.detect) → project; the batch span starts the
    event's trace with a link to each member file's trace, and analyze and project follow it."""
    run = await run_pipeline(
        redis=redis_client,
        redis_url=redis_url,
        database_url=database_url,
        db_schema=db_schema,
        engine=engine,
        prefix=key_prefix,
        root=root,
    )
    finished = spans.get_finished_spans()
    names = run.names
    observed = {o.path.name: o.entry_id for o in run.outcomes if o.kind is OutcomeKind.OBSERVED}
    assert sorted(observed) == ["a.jpg", "b.jpg", "c.jpg"]

    detect_spans = {}
    for name, entry_id in observed.items():
        watch = _one(finished, "watch", **{"hsi.entry_id": entry_id})
        assert watch.parent is None  # a root: the file's trace starts here
        assert _attr(watch, "hsi.camera") == CAMERA
        assert _attr(watch, "hsi.outcome") == "ok"
        detect = _one(finished, "detect", **{"hsi.entry_id": entry_id})
        assert detect.context.trace_id == watch.context.trace_id, name
        assert _parent_id(detect) == watch.context.span_id
        assert _attr(detect, "hsi.stream") == names.files(CAMERA)
        assert _attr(detect, "hsi.outcome") == "ok"
        (ai,) = [
            s for s in _named(finished, "ai.detect") if _parent_id(s) == detect.context.span_id
        ]
        assert ai.context.trace_id == watch.context.trace_id
        assert _attr(ai, "hsi.ai.backend") == "embedded"
        projected = [
            s for s in _named(finished, "project") if s.context.trace_id == watch.context.trace_id
        ]
        # The file entry (child of watch) and its detection entry (child of detect).
        assert sorted(_parent_id(s) or 0 for s in projected) == sorted(
            [watch.context.span_id, detect.context.span_id]
        )
        detect_spans[name] = detect

    duplicate = _one(finished, "watch", **{"hsi.result": "duplicate"})
    assert _attr(duplicate, "hsi.outcome") == "skipped"

    batch = _one(finished, "batch")
    assert batch.parent is None  # the event's own trace
    assert _attr(batch, "hsi.file_count") == 2
    linked = {(link.context.trace_id, link.context.span_id) for link in batch.links}
    assert linked == {_ids(detect_spans["a.jpg"]), _ids(detect_spans["b.jpg"])}
    event_trace = batch.context.trace_id
    analyze = _one(finished, "analyze")
    assert analyze.context.trace_id == event_trace
    assert _parent_id(analyze) == batch.context.span_id
    ai_analyze = _one(finished, "ai.analyze")
    assert _parent_id(ai_analyze) == analyze.context.span_id
    assert _attr(ai_analyze, "hsi.ai.backend") == "rules"
    assert isinstance(_attr(ai_analyze, "hsi.ai.latency_ms"), float)
    event_projects = [s for s in _named(finished, "project") if s.context.trace_id == event_trace]
    assert sorted(_parent_id(s) or 0 for s in event_projects) == sorted(
        [batch.context.span_id, analyze.context.span_id]
    )
    for span in (*_named(finished, "detect"), analyze, *_named(finished, "project")):
        assert {"hsi.camera", "hsi.stream", "hsi.entry_id", "hsi.outcome"} <= set(
            span.attributes or {}
        ), span.name


async def test_a_replay_makes_no_spans(
    spans: InMemorySpanExporter,
    redis_client: Redis,
    engine: AsyncEngine,
    key_prefix: str,
    root: Path,
) -> None:
    """`hsi replay` projects the entries again without creating traces or spans for them."""
    names = StreamNames(key_prefix)
    watcher = Watcher(redis_client, names, root, FAST)
    await watcher.ingest(put_files(root, [("cat-chelsea.jpg", "x.jpg")]))
    assert [s.name for s in spans.get_finished_spans()] == ["watch"]
    spans.clear()
    report = await rebuild(engine, redis_client, names)
    assert report.applied >= 2  # camera.registered and file.observed
    assert spans.get_finished_spans() == ()

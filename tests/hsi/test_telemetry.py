"""Telemetry: spans, the Prometheus exposition, stream gauges, reset, and real OTLP/HTTP export."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from hsi.infra.stream_gauges import StreamReading, StreamSnapshot
from hsi.infra.telemetry import (
    STAGE_BUCKETS,
    TelemetryConfig,
    current_telemetry,
    get_meter,
    get_tracer,
    instruments,
    register_stream_gauges,
    render_metrics,
    reset_telemetry,
    setup_telemetry,
)
from hsi.infra.tracing import traces_endpoint
from hsi.settings import components
from hsi.settings.model import Settings
from streams.envelope import HEADER_TRACEPARENT
from streams.tracing import StageSpans, StageTelemetry, ai_request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _clean_telemetry() -> Iterator[None]:
    reset_telemetry()
    yield
    reset_telemetry()


def _samples() -> Samples:
    """Every sample of the exposition, parsed by prometheus_client's own parser."""
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


# --- tracing ------------------------------------------------------------------------------------


def test_span_is_exported_with_the_service_name() -> None:
    """A span of HSI's tracer reaches the extra exporter with service.name set."""
    exporter = InMemorySpanExporter()
    setup_telemetry(TelemetryConfig(service_name="hsi-test"), span_exporter=exporter)
    with get_tracer().start_as_current_span("stage.detect") as span:
        span.set_attribute("camera", "front")
        assert trace.get_current_span() is span
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "stage.detect"
    assert finished.resource.attributes["service.name"] == "hsi-test"
    assert finished.attributes is not None
    assert finished.attributes["camera"] == "front"


def test_setup_installs_the_api_globals() -> None:
    """Third-party code using the OpenTelemetry API gets HSI's providers."""
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry(TelemetryConfig(), span_exporter=exporter)
    assert trace.get_tracer_provider() is telemetry.tracer_provider
    assert metrics.get_meter_provider() is telemetry.meter_provider
    with trace.get_tracer("third.party").start_as_current_span("library.call"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["library.call"]


def test_sampler_ratio_zero_records_no_spans() -> None:
    """With ratio 0 root spans are not sampled, so nothing is exported."""
    exporter = InMemorySpanExporter()
    setup_telemetry(TelemetryConfig(sampler_ratio=0.0), span_exporter=exporter)
    with get_tracer().start_as_current_span("dropped") as span:
        assert not span.get_span_context().trace_flags.sampled
    assert exporter.get_finished_spans() == ()


def test_without_an_exporter_spans_carry_their_trace_unrecorded() -> None:
    """No exporter: spans are not recorded, yet each has its ids and the sampled flag, and a
    child continues its parent's trace (logs and traceparent headers keep working)."""
    telemetry = setup_telemetry(TelemetryConfig())
    with get_tracer().start_as_current_span("stage.detect") as parent:
        assert not parent.is_recording()
        context = parent.get_span_context()
        assert context.is_valid
        assert context.trace_flags.sampled
        with get_tracer().start_as_current_span("detector.request") as child:
            assert child.get_span_context().trace_id == context.trace_id
            assert child.get_span_context().span_id != context.span_id
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    with get_tracer().start_as_current_span("after.processor") as span:
        assert span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["after.processor"]


def test_without_an_exporter_a_stage_carries_the_incoming_trace_on() -> None:
    """No exporter: a stage makes no span per entry; inside `use` the current span is the
    incoming one (so log lines and AI calls join the file's trace), and the output carries the
    incoming `traceparent`. With an exporter each entry has its own recorded span again."""
    telemetry = setup_telemetry(TelemetryConfig())
    stage = StageTelemetry.current()
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with StageSpans(stage, "detect", "s", "cam") as spans:
        spans.start("1-0", {HEADER_TRACEPARENT: incoming})
        with spans.use("1-0"):
            current = trace.get_current_span().get_span_context()
            assert f"{current.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
            assert f"{current.span_id:016x}" == "b7ad6b7169203331"
        assert spans.headers("1-0") == {HEADER_TRACEPARENT: incoming}
    assert not trace.get_current_span().get_span_context().is_valid
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    stage = StageTelemetry.current()
    with StageSpans(stage, "detect", "s", "cam") as spans:
        spans.start("2-0", {HEADER_TRACEPARENT: incoming})
        with spans.use("2-0"):
            current = trace.get_current_span().get_span_context()
            assert f"{current.span_id:016x}" != "b7ad6b7169203331"
    (span,) = exporter.get_finished_spans()
    assert span.name == "detect"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_without_an_exporter_ai_requests_are_measured_without_a_span() -> None:
    """No exporter: an AI request makes no child span (the stage's trace stays current), and
    its duration and errors are recorded by outcome as with one."""
    setup_telemetry(TelemetryConfig())
    stage = StageTelemetry.current()
    async with ai_request(stage, "ai.detect", "embedded") as span:
        assert not span.get_span_context().is_valid
    with pytest.raises(ValueError, match="bad"):
        async with ai_request(stage, "ai.detect", "embedded"):
            raise ValueError("bad")
    with pytest.raises(FileNotFoundError):
        async with ai_request(stage, "ai.detect", "embedded", bad_input=(FileNotFoundError,)):
            raise FileNotFoundError("gone")
    got = _samples()
    duration = "hsi_ai_request_duration_seconds_count"
    for outcome in ("ok", "error", "bad_input"):
        assert got[(duration, _labels(backend="embedded", outcome=outcome))] == 1
    errors = got[
        ("hsi_ai_request_errors_total", _labels(backend="embedded", error_type="ValueError"))
    ]
    assert errors == 1


def test_before_setup_everything_is_a_no_op() -> None:
    """Without setup the accessors return no-op objects and callers need no checks."""
    assert current_telemetry() is None
    with get_tracer().start_as_current_span("nothing") as span:
        assert not span.get_span_context().is_valid
    instruments().entries_processed.add(1, {"stage": "x"})
    get_meter().create_counter("hsi_unused_total").add(1)
    unregister = register_stream_gauges(StreamSnapshot())
    unregister()
    body, _ = render_metrics()
    assert b"hsi_entries_processed_total" not in body


# --- metrics ------------------------------------------------------------------------------------


def test_instruments_appear_in_the_prometheus_exposition() -> None:
    """Counters and histograms are rendered with their hsi_ names and parse as Prometheus text."""
    setup_telemetry(TelemetryConfig(service_name="hsi-test"))
    ins = instruments()
    stage = {"stage": "detect", "camera": "front", "outcome": "ok"}
    ins.entries_processed.add(3, stage)
    ins.stage_duration.record(0.3, stage)
    ins.stage_duration.record(7.0, stage)
    ins.detections_processed.add(2, {"camera": "front", "label": "person"})
    ins.events_created.add(1, {"camera": "front", "risk_level": "high"})
    ins.pipeline_errors.add(1, {"stage": "analyze", "error_type": "TimeoutError"})
    ins.ai_request_duration.record(12.5, {"backend": "llm", "outcome": "ok"})
    ins.ai_request_errors.add(1, {"backend": "llm", "error_type": "HTTPError"})
    ins.end_to_end_latency.record(95.0, {"camera": "front"})
    ins.dedupe_hits.add(4, {"camera": "front"})
    ins.batch_size.record(7, {"camera": "front"})

    samples = _samples()
    assert samples[("hsi_entries_processed_total", _labels(**stage))] == 3
    assert samples[("hsi_stage_duration_seconds_count", _labels(**stage))] == 2
    assert samples[("hsi_stage_duration_seconds_sum", _labels(**stage))] == pytest.approx(7.3)
    assert samples[("hsi_stage_duration_seconds_bucket", _labels(**stage, le="0.5"))] == 1
    assert samples[("hsi_stage_duration_seconds_bucket", _labels(**stage, le="10.0"))] == 2
    assert samples[("hsi_stage_duration_seconds_bucket", _labels(**stage, le="+Inf"))] == 2
    label = _labels(camera="front", label="person")
    assert samples[("hsi_detections_processed_total", label)] == 2
    risk = _labels(camera="front", risk_level="high")
    assert samples[("hsi_events_created_total", risk)] == 1
    error = _labels(stage="analyze", error_type="TimeoutError")
    assert samples[("hsi_pipeline_errors_total", error)] == 1
    ai = _labels(backend="llm", outcome="ok")
    assert samples[("hsi_ai_request_duration_seconds_sum", ai)] == 12.5
    ai_error = _labels(backend="llm", error_type="HTTPError")
    assert samples[("hsi_ai_request_errors_total", ai_error)] == 1
    front = _labels(camera="front")
    latency = "hsi_end_to_end_latency_seconds_bucket"
    assert samples[(latency, _labels(camera="front", le="90.0"))] == 0
    assert samples[(latency, _labels(camera="front", le="120.0"))] == 1
    assert samples[("hsi_dedupe_hits_total", front)] == 4
    assert samples[("hsi_batch_size_sum", front)] == 7


def test_stage_histogram_uses_seconds_scale_buckets() -> None:
    """The stage histogram exposes exactly the configured bucket boundaries."""
    setup_telemetry(TelemetryConfig())
    instruments().stage_duration.record(0.01, {"stage": "s"})
    bounds = [
        labels for (name, labels) in _samples() if name == "hsi_stage_duration_seconds_bucket"
    ]
    les = sorted(float(dict(labels)["le"]) for labels in bounds)
    assert les == [*STAGE_BUCKETS, float("inf")]


def test_stream_gauges_report_what_the_snapshot_holds() -> None:
    """Observable gauges read the snapshot at every scrape, and follow its updates."""
    setup_telemetry(TelemetryConfig())
    snapshot = StreamSnapshot(
        [
            StreamReading(
                "hsi:files",
                group="detect",
                camera="front",
                length=12,
                lag=3,
                pending=2,
                oldest_pending_age_seconds=4.5,
                dead_letters=1,
            ),
            StreamReading("hsi:events", length=7),
        ]
    )
    unregister = register_stream_gauges(snapshot)
    files = _labels(stream="hsi:files", group="detect", camera="front")
    events = _labels(stream="hsi:events", group="", camera="")
    samples = _samples()
    assert samples[("hsi_stream_length", files)] == 12
    assert samples[("hsi_stream_group_lag", files)] == 3
    assert samples[("hsi_stream_pending", files)] == 2
    assert samples[("hsi_stream_oldest_pending_age_seconds", files)] == 4.5
    assert samples[("hsi_stream_dead_letters", files)] == 1
    assert samples[("hsi_stream_length", events)] == 7
    assert ("hsi_stream_group_lag", events) not in samples

    snapshot.update([StreamReading("hsi:files", group="detect", camera="front", length=20)])
    samples = _samples()
    assert samples[("hsi_stream_length", files)] == 20
    assert ("hsi_stream_pending", files) not in samples

    unregister()
    assert not any(name.startswith("hsi_stream_") for name, _ in _samples())


def test_a_failing_gauge_callback_does_not_hide_the_others() -> None:
    """One callback raising leaves the other sources' readings in the exposition."""
    setup_telemetry(TelemetryConfig())

    def broken() -> list[StreamReading]:
        raise RuntimeError("snapshot unavailable")

    register_stream_gauges(broken)
    register_stream_gauges(StreamSnapshot([StreamReading("hsi:files", length=5)]))
    samples = _samples()
    assert samples[("hsi_stream_length", _labels(stream="hsi:files"))] == 5


def test_setup_is_idempotent() -> None:
    """The same configuration returns the same telemetry and keeps the recorded values."""
    first = setup_telemetry(TelemetryConfig())
    instruments().dedupe_hits.add(1, {"camera": "a"})
    assert setup_telemetry(TelemetryConfig()) is first
    assert _samples()[("hsi_dedupe_hits_total", _labels(camera="a"))] == 1


def test_reset_and_setup_again_works_twice_in_a_row() -> None:
    """Reset unregisters the collector, so setting up again never duplicates timeseries."""
    for round_ in range(3):
        exporter = InMemorySpanExporter()
        telemetry = setup_telemetry(
            TelemetryConfig(service_name=f"hsi-{round_}"), span_exporter=exporter
        )
        assert trace.get_tracer_provider() is telemetry.tracer_provider
        instruments().entries_processed.add(1, {"stage": "detect"})
        with get_tracer().start_as_current_span("round"):
            pass
        assert exporter.get_finished_spans()[0].resource.attributes["service.name"] == (
            f"hsi-{round_}"
        )
        # A fresh provider each round: the counter starts again from zero.
        assert _samples()[("hsi_entries_processed_total", _labels(stage="detect"))] == 1
        reset_telemetry()
        assert current_telemetry() is None
        body, _ = render_metrics()
        assert b"hsi_entries_processed_total" not in body


def test_setup_with_another_config_replaces_the_providers() -> None:
    """A different configuration shuts the old providers down and installs new ones."""
    first = setup_telemetry(TelemetryConfig(service_name="one"))
    second = setup_telemetry(TelemetryConfig(service_name="two"))
    assert second is not first
    assert current_telemetry() is second
    instruments().dedupe_hits.add(1)
    assert _samples()[("hsi_dedupe_hits_total", frozenset())] == 1


def test_metrics_can_be_disabled() -> None:
    """With metrics off the instruments are no-ops and no hsi_ series are exposed."""
    setup_telemetry(TelemetryConfig(metrics_enabled=False))
    instruments().entries_processed.add(1, {"stage": "x"})
    register_stream_gauges(StreamSnapshot([StreamReading("s", length=1)]))
    body, _ = render_metrics()
    assert b"hsi_" not in body


def test_config_from_settings() -> None:
    """The OTEL_* settings map onto the config."""
    settings = Settings(
        _env_file=None,
        otel_service_name="hsi-prod",
        otel_exporter_otlp_endpoint="http://collector:4318",
        otel_traces_sampler_ratio=0.25,
    )
    config = components.telemetry_config(settings)
    assert config == TelemetryConfig("hsi-prod", "http://collector:4318", 0.25, True)


def test_sampler_ratio_is_validated() -> None:
    """A ratio outside 0..1 is refused."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        TelemetryConfig(sampler_ratio=1.5)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
        ("https://otel.example/prefix", "https://otel.example/prefix/v1/traces"),
    ],
)
def test_traces_endpoint_appends_the_signal_path(endpoint: str, url: str) -> None:
    """A collector base URL gets /v1/traces; a full traces URL is kept."""
    assert traces_endpoint(endpoint) == url


# --- OTLP/HTTP against a real receiver ----------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def span_names(self) -> list[str]:
        return [
            span.name
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def service_names(self) -> set[str]:
        return {
            attribute.value.string_value
            for request in self.requests
            for resource_spans in request.resource_spans
            for attribute in resource_spans.resource.attributes
            if attribute.key == "service.name"
        }


@pytest.fixture
def otlp_receiver() -> Iterator[Receiver]:
    """A tiny OTLP/HTTP traces receiver on a free loopback port."""
    received: list[ExportTraceServiceRequest] = []
    paths: list[str] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append(request)
            paths.append(self.path)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            arrived.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    receiver = Receiver(url=f"http://{host!s}:{port}")
    receiver.requests = received
    receiver.paths = paths
    receiver.arrived = arrived
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_spans_reach_a_real_otlp_http_receiver(otlp_receiver: Receiver) -> None:
    """With an OTLP endpoint set, spans are POSTed as protobuf to <endpoint>/v1/traces."""
    telemetry = setup_telemetry(
        TelemetryConfig(service_name="hsi-otlp", otlp_endpoint=otlp_receiver.url)
    )
    tracer = get_tracer()
    with tracer.start_as_current_span("pipeline.entry") as parent:
        child = tracer.start_span("stage.analyze")
        child.end()
    assert parent.get_span_context().trace_id == child.get_span_context().trace_id
    assert telemetry.force_flush(10_000)
    assert otlp_receiver.arrived.wait(10)
    assert sorted(otlp_receiver.span_names()) == ["pipeline.entry", "stage.analyze"]
    assert otlp_receiver.service_names() == {"hsi-otlp"}
    assert set(otlp_receiver.paths) == {"/v1/traces"}

"""OpenTelemetry for HSI: one TracerProvider and one MeterProvider, the `hsi_*` instruments, and
the Prometheus exposition that the API serves at `/metrics`.

`setup_telemetry()` builds the providers once (a second call with the same configuration returns
the same `Telemetry`; with another it replaces it) and `reset_telemetry()` shuts them down (the
test suite calls it between cases). Nothing happens at import time.

Providers and globals. The OpenTelemetry API lets a process set its global providers only once
(`set_tracer_provider()` ignores later calls with a logged warning), which does not fit a test
suite that sets up and resets telemetry many times. So HSI keeps its own provider objects in this
module and HSI code gets tracers, meters and instruments through `get_tracer()`, `get_meter()` and
`instruments()` here, which always answer with the current providers (or no-op ones before setup).
`setup_telemetry()` also installs the providers as the API globals, so that third-party
instrumentation and `opentelemetry.trace.get_current_span()` see the same traces, and
`reset_telemetry()` clears the API's set-once guards the way OpenTelemetry's own test utilities do
(`opentelemetry.test.globals_test`). Those guards are private: if a future OpenTelemetry renames
them, only the API globals stay on the first providers; HSI's own telemetry keeps working.

The instruments (`Instruments`) and the span helpers the stages use are defined in
`streams.tracing` on the OpenTelemetry API, since `streams` never imports `hsi`; this module makes
the SDK providers they record on, and hands them to the pipeline as a `StageTelemetry`.

Spans nobody takes are not recorded. Without an exporter (no `OTEL_EXPORTER_OTLP_ENDPOINT` and
no test exporter) the provider has no span processor, and a recorded span would only be built,
filled and thrown away, per entry and stage. So until a processor is added, its tracers make
non-recording spans: the sampler still decides, and each span still gets its trace id, its own
span id and the sampled flag, exactly as a recorded one would, so logs show the trace id and the
entries' `traceparent` headers carry the trace on (to a process that does export).

Metrics are pulled: the `PrometheusMetricReader` registers a collector in prometheus_client's
registry (the global `REGISTRY`, which also carries the process metrics) and `render_metrics()`
renders it, so no separate HTTP server runs. Shutting the providers down unregisters it, so a
reset followed by a setup never meets "Duplicated timeseries".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from streams.metrics import (
    AI_BUCKETS,
    BATCH_SIZE_BUCKETS,
    END_TO_END_BUCKETS,
    INSTRUMENTATION_NAME,
    STAGE_BUCKETS,
    Instruments,
)
from streams.names import Group
from streams.tracing import StageTelemetry

if TYPE_CHECKING:
    pass

__all__ = [
    "AI_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "END_TO_END_BUCKETS",
    "STAGE_BUCKETS",
    "Instruments",
    "StreamReading",
    "StreamSnapshot",
    "Telemetry",
    "TelemetryConfig",
    "current_telemetry",
    "get_meter",
    "get_tracer",
    "instruments",
    "register_stream_gauges",
    "render_metrics",
    "reset_telemetry",
    "setup_telemetry",
    "stage_telemetry",
    "traces_endpoint",
]


@dataclass(frozen=True)
class TelemetryConfig:
    service_name: str = "hsi"
    otlp_endpoint: str | None = None
    sampler_ratio: float = 1.0
    metrics_enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.sampler_ratio <= 1.0:
            raise ValueError(f"sampler_ratio must be between 0 and 1, got {self.sampler_ratio}")


def traces_endpoint(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL (`http://collector:4318` →
    `…/v1/traces`), as `OTEL_EXPORTER_OTLP_ENDPOINT` means it; a URL that already ends in
    `/v1/traces` is kept."""
    endpoint = endpoint.strip()
    if endpoint.rstrip("/").endswith("/v1/traces"):
        return endpoint.rstrip("/")
    return endpoint.rstrip("/") + "/v1/traces"


# --- stream gauges ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamReading:
    """The state of one stream (and consumer group) at the last poll; None means unknown."""

    stream: str
    group: str | None = None
    camera: str | None = None
    length: int | None = None
    lag: int | None = None
    pending: int | None = None
    oldest_pending_age_seconds: float | None = None
    dead_letters: int | None = None

    def attributes(self) -> dict[str, str]:
        attrs = {"stream": self.stream}
        if self.group is not None:
            attrs["group"] = self.group
        if self.camera is not None:
            attrs["camera"] = self.camera
        return attrs


StreamCallback = Callable[[], Iterable[StreamReading]]


class StreamSnapshot:
    """The readings a poller last took; register it as the gauges' callback.

    The poller (with its own Redis connection and schedule) calls `update()`; the gauges only read
    the snapshot, so a metrics scrape never waits on Redis.
    """

    def __init__(self, readings: Iterable[StreamReading] = ()) -> None:
        self._readings: tuple[StreamReading, ...] = tuple(readings)

    def update(self, readings: Iterable[StreamReading]) -> None:
        self._readings = tuple(readings)  # one atomic swap; readers see old or new

    def __call__(self) -> tuple[StreamReading, ...]:
        return self._readings


_STREAM_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("hsi_stream_length", "length", "", "Entries in the stream."),
    ("hsi_stream_group_lag", "lag", "", "Entries the consumer group has not read yet."),
    ("hsi_stream_pending", "pending", "", "Entries read but not acknowledged."),
    (
        "hsi_stream_oldest_pending_age_seconds",
        "oldest_pending_age_seconds",
        "s",
        "Idle time of the oldest unacknowledged entry.",
    ),
    ("hsi_stream_dead_letters", "dead_letters", "", "Entries moved to the dead-letter stream."),
)


# --- the tracer provider ------------------------------------------------------------------------


class _TracerProvider(TracerProvider):
    """The SDK provider with HSI's sampler (`ParentBased(TraceIdRatioBased(ratio))`: a child
    follows its parent's decision, a root is sampled at `ratio`), whose tracers record spans only
    once a span processor takes them."""

    exporting = False

    def __init__(self, ratio: float, resource: Resource) -> None:
        super().__init__(sampler=ParentBased(TraceIdRatioBased(ratio)), resource=resource)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.exporting = True

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        tracer = super().get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        if self.exporting or not isinstance(tracer, Tracer):
            return tracer
        return _UnrecordedTracer(self, tracer)


class _UnrecordedTracer(trace.Tracer):
    """An SDK tracer's spans without recording them, while its provider has no span processor.

    Trace id, span id, flags and trace state are made as the SDK's `Tracer.start_span` makes them
    with the provider's sampler; a processor added later makes every new span a recorded one.
    """

    def __init__(self, provider: _TracerProvider, tracer: Tracer) -> None:
        self._provider = provider
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        tracer = self._tracer
        if self._provider.exporting:
            return tracer.start_span(
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        parent = trace.get_current_span(context).get_span_context()
        ids = tracer.id_generator
        if parent.is_valid:
            # What `ParentBased` decides for a child: the parent's sampled flag and trace state
            # (and the SDK carries the parent's random-trace-id flag on).
            return NonRecordingSpan(
                SpanContext(
                    parent.trace_id,
                    ids.generate_span_id(),
                    is_remote=False,
                    trace_flags=TraceFlags(
                        parent.trace_flags & (TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
                    ),
                    trace_state=parent.trace_state,
                )
            )
        trace_id, random_trace_id = ids.generate_trace_id(), ids.is_trace_id_random()
        sampling = tracer.sampler.should_sample(
            context, trace_id, name, kind, attributes, links or ()
        )
        sampled = sampling.decision is Decision.RECORD_AND_SAMPLE  # `Decision.is_sampled()`
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        return NonRecordingSpan(
            SpanContext(
                trace_id,
                ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(flags),
                trace_state=sampling.trace_state,
            )
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API's own decorator is private
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


# --- the telemetry object -----------------------------------------------------------------------


@dataclass
class Telemetry:
    config: TelemetryConfig
    tracer_provider: TracerProvider
    meter_provider: metrics.MeterProvider
    instruments: Instruments
    registry: CollectorRegistry
    span_exporter: SpanExporter | None = None
    _stream_callbacks: list[StreamCallback] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def get_tracer(self, name: str = INSTRUMENTATION_NAME) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def get_meter(self, name: str = INSTRUMENTATION_NAME) -> Meter:
        return self.meter_provider.get_meter(name)

    def register_stream_gauges(self, callback: StreamCallback) -> Callable[[], None]:
        """Report `callback()`'s readings in the `hsi_stream_*` gauges at every collection.

        The callback runs inside the metrics collection: it must only read memory (see
        `StreamSnapshot`). Returns a function that unregisters it.
        """
        with self._lock:
            self._stream_callbacks.append(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._stream_callbacks:
                    self._stream_callbacks.remove(callback)

        return unregister

    def _readings(self) -> list[StreamReading]:
        with self._lock:
            callbacks = list(self._stream_callbacks)
        readings: list[StreamReading] = []
        for callback in callbacks:
            try:
                readings.extend(callback())
            except Exception:  # noqa: S112 - one broken source must not hide the others
                continue
        return readings

    def _observer(self, attribute: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for reading in self._readings():
                value = getattr(reading, attribute)
                if value is not None:
                    observations.append(Observation(value, reading.attributes()))
            return observations

        return observe

    def _observe_projector_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        behind = [
            (reading.lag or 0) + (reading.pending or 0)
            for reading in self._readings()
            if reading.group == Group.PROJECT.value
            and (reading.lag is not None or reading.pending is not None)
        ]
        return [Observation(sum(behind))] if behind else []

    def _create_stream_gauges(self) -> None:
        meter = self.get_meter()
        for name, attribute, unit, description in _STREAM_GAUGES:
            meter.create_observable_gauge(
                name, callbacks=[self._observer(attribute)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            "hsi_projector_lag",
            callbacks=[self._observe_projector_lag],
            description="Entries group `project` has not yet read or acknowledged (lag + "
            "pending) over the streams this process reports.",
        )

    def stage_telemetry(self) -> StageTelemetry:
        """What the stages, reclaimers and watcher record on (see `streams.tracing`)."""
        return StageTelemetry(self.get_tracer(), self.instruments)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export the finished spans now; True when everything was exported in time."""
        return self.tracer_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown()


# --- module state -------------------------------------------------------------------------------

_TELEMETRY: Telemetry | None = None
_NOOP_INSTRUMENTS: Instruments | None = None
_LOCK = threading.Lock()


def _build(config: TelemetryConfig, span_exporter: SpanExporter | None) -> Telemetry:
    resource = Resource.create({SERVICE_NAME: config.service_name})
    tracer_provider = _TracerProvider(config.sampler_ratio, resource)
    if config.otlp_endpoint:
        exporter = OTLPSpanExporter(endpoint=traces_endpoint(config.otlp_endpoint), timeout=10)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))

    registry = REGISTRY
    meter_provider: metrics.MeterProvider
    if config.metrics_enabled:
        reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
        # No exemplars: the Prometheus exposition carries none, and under the default filter
        # every measurement made inside a sampled span would be offered to a reservoir.
        meter_provider = MeterProvider(
            resource=resource, metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter()
        )
    else:
        meter_provider = metrics.NoOpMeterProvider()
    telemetry = Telemetry(
        config=config,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        instruments=Instruments.create(meter_provider.get_meter(INSTRUMENTATION_NAME)),
        registry=registry,
        span_exporter=span_exporter,
    )
    telemetry._create_stream_gauges()
    return telemetry


def _reset_api_globals() -> None:
    """Let the OpenTelemetry API accept new global providers (what its test utilities do)."""
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    if hasattr(trace, "_TRACER_PROVIDER_SET_ONCE") and hasattr(trace, "_TRACER_PROVIDER"):
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
    if hasattr(metrics_internal, "_METER_PROVIDER_SET_ONCE") and hasattr(
        metrics_internal, "_METER_PROVIDER"
    ):
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()
        metrics_internal._METER_PROVIDER = None


def setup_telemetry(
    config: TelemetryConfig, *, span_exporter: SpanExporter | None = None
) -> Telemetry:
    """Create the providers and instruments and install them (see the module docstring).

    `span_exporter` is an extra exporter fed synchronously (tests pass an InMemorySpanExporter);
    spans go to OTLP/HTTP through a batch processor when `config.otlp_endpoint` is set.
    """
    global _TELEMETRY
    with _LOCK:
        current = _TELEMETRY
        if current is not None:
            if current.config == config and current.span_exporter is span_exporter:
                return current
            _TELEMETRY = None
            current.shutdown()
            _reset_api_globals()
        telemetry = _build(config, span_exporter)
        trace.set_tracer_provider(telemetry.tracer_provider)
        if config.metrics_enabled:
            metrics.set_meter_provider(telemetry.meter_provider)
        _TELEMETRY = telemetry
        return telemetry


def reset_telemetry() -> None:
    """Flush and shut down the providers, unregister the Prometheus collector, and clear the API
    globals so that `setup_telemetry()` can run again (tests; also fine at process exit)."""
    global _TELEMETRY
    with _LOCK:
        current, _TELEMETRY = _TELEMETRY, None
        if current is not None:
            current.shutdown()
            _reset_api_globals()


def current_telemetry() -> Telemetry | None:
    return _TELEMETRY


def get_tracer(name: str = INSTRUMENTATION_NAME) -> trace.Tracer:
    """A tracer of the current providers; a no-op one before `setup_telemetry()`."""
    current = _TELEMETRY
    return current.get_tracer(name) if current is not None else trace.NoOpTracer()


def get_meter(name: str = INSTRUMENTATION_NAME) -> Meter:
    """A meter of the current providers; a no-op one before `setup_telemetry()`."""
    current = _TELEMETRY
    return current.get_meter(name) if current is not None else metrics.NoOpMeter(name)


def instruments() -> Instruments:
    """The current instruments; no-op ones before `setup_telemetry()`, so callers need no
    checks. Fetch them per use (or per component start), not once at import."""
    global _NOOP_INSTRUMENTS
    current = _TELEMETRY
    if current is not None:
        return current.instruments
    if _NOOP_INSTRUMENTS is None:
        _NOOP_INSTRUMENTS = Instruments.create(metrics.NoOpMeter(INSTRUMENTATION_NAME))
    return _NOOP_INSTRUMENTS


def stage_telemetry() -> StageTelemetry:
    """The current tracer and instruments for the write side; no-op ones before setup."""
    return StageTelemetry(get_tracer(), instruments())


def register_stream_gauges(callback: StreamCallback) -> Callable[[], None]:
    """`Telemetry.register_stream_gauges()` on the current telemetry. Before setup (or with
    metrics disabled) the callback is not used and the returned unregister does nothing."""
    current = _TELEMETRY
    if current is None or not current.config.metrics_enabled:
        return lambda: None
    return current.register_stream_gauges(callback)


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric and its content type, for `/metrics`.

    Collecting runs the gauge callbacks and formats every series: call it off the event loop
    (`asyncio.to_thread`) when the registry is large.
    """
    current = _TELEMETRY
    registry = current.registry if current is not None else REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST

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

The instruments (`Instruments`, `streams.metrics`) and the span helpers the stages use
(`streams.tracing`) are defined on the OpenTelemetry API, since `streams` never imports `hsi`;
this module makes the SDK providers they record on, and hands them to the pipeline as a
`StageTelemetry`.

`hsi.infra.tracing` makes the tracer provider (HSI's sampler; spans are recorded only once an
exporter takes them) and `hsi.infra.stream_gauges` the `hsi_stream_*` and `hsi_projector_lag`
gauges.

Metrics are pulled: the `PrometheusMetricReader` registers a collector in prometheus_client's
registry (the global `REGISTRY`, which also carries the process metrics) and `render_metrics()`
renders it, so no separate HTTP server runs. Shutting the providers down unregisters it, so a
reset followed by a setup never meets "Duplicated timeseries".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from hsi.infra.stream_gauges import StreamCallback, StreamGauges
from hsi.infra.tracing import build_tracer_provider
from streams.metrics import (
    AI_BUCKETS,
    BATCH_SIZE_BUCKETS,
    END_TO_END_BUCKETS,
    INSTRUMENTATION_NAME,
    STAGE_BUCKETS,
    Instruments,
)
from streams.tracing import StageTelemetry

__all__ = [
    "AI_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "END_TO_END_BUCKETS",
    "STAGE_BUCKETS",
    "Instruments",
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


# --- the telemetry object -----------------------------------------------------------------------


@dataclass
class Telemetry:
    config: TelemetryConfig
    tracer_provider: TracerProvider
    meter_provider: metrics.MeterProvider
    instruments: Instruments
    registry: CollectorRegistry
    span_exporter: SpanExporter | None = None
    _stream_gauges: StreamGauges = field(default_factory=StreamGauges, init=False, repr=False)
    # The SDK makes a new tracer at every `get_tracer` call; the API asks for one per request.
    _tracers: dict[str, trace.Tracer] = field(default_factory=dict, init=False, repr=False)

    def get_tracer(self, name: str = INSTRUMENTATION_NAME) -> trace.Tracer:
        tracer = self._tracers.get(name)
        if tracer is None:
            tracer = self._tracers[name] = self.tracer_provider.get_tracer(name)
        return tracer

    def get_meter(self, name: str = INSTRUMENTATION_NAME) -> Meter:
        return self.meter_provider.get_meter(name)

    def register_stream_gauges(self, callback: StreamCallback) -> Callable[[], None]:
        """Report `callback()`'s readings in the `hsi_stream_*` gauges at every collection.

        The callback runs inside the metrics collection: it must only read memory (see
        `StreamSnapshot`). Returns a function that unregisters it.
        """
        return self._stream_gauges.register(callback)

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
    tracer_provider = build_tracer_provider(
        config.sampler_ratio,
        resource,
        otlp_endpoint=config.otlp_endpoint,
        span_exporter=span_exporter,
    )

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
    telemetry._stream_gauges.create(telemetry.get_meter())
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

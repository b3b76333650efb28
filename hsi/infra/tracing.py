"""The tracer provider HSI installs: HSI's sampler, and no recording without an exporter.

Spans nobody takes are not recorded. Without an exporter (no `OTEL_EXPORTER_OTLP_ENDPOINT` and
no test exporter) the provider has no span processor, and a recorded span would only be built,
filled and thrown away, per entry and stage. So until a processor is added, its tracers make
non-recording spans: the sampler still decides, and each span still gets its trace id, its own
span id and the sampled flag, exactly as a recorded one would, so logs show the trace id and the
entries' `traceparent` headers carry the trace on (to a process that does export).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes


def traces_endpoint(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL (`http://collector:4318` →
    `…/v1/traces`), as `OTEL_EXPORTER_OTLP_ENDPOINT` means it; a URL that already ends in
    `/v1/traces` is kept."""
    endpoint = endpoint.strip()
    if endpoint.rstrip("/").endswith("/v1/traces"):
        return endpoint.rstrip("/")
    return endpoint.rstrip("/") + "/v1/traces"


def build_tracer_provider(
    ratio: float,
    resource: Resource,
    *,
    otlp_endpoint: str | None,
    span_exporter: SpanExporter | None,
) -> TracerProvider:
    """A provider sampling roots at `ratio`; spans go to OTLP/HTTP through a batch processor when
    `otlp_endpoint` is set and to `span_exporter` synchronously when given."""
    provider = _TracerProvider(ratio, resource)
    if otlp_endpoint:
        exporter = OTLPSpanExporter(endpoint=traces_endpoint(otlp_endpoint), timeout=10)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


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

    @property
    def recording(self) -> bool:
        """Whether its spans are recorded: once the provider has a span processor."""
        return self._provider.exporting

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

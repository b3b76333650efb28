"""Traces of the write side, on the OpenTelemetry API only (never the SDK).

One trace per camera file. The watcher starts a root span `watch` per published file and puts its
W3C `traceparent` into the entry's headers. Every stage, per input entry, starts a span (`detect`,
`analyze`, `project`) whose parent is the input's `traceparent`, and writes its own span context
into the output's `traceparent`, so a file's trace reads watch → detect → project. AI requests are
child spans (`ai.detect`, `ai.analyze`).

One trace per security event. A batch gathers the detections of many files, so it starts a trace
of its own: the `batch` span (a root, from the batch's first item to its close) has a span link to
the trace of each file in it (the member detections' `traceparent`, kept in the open-batch state),
and the batch's `analyze` and `project` spans continue the batch's trace. So the event is one
trace with links to each file's trace.

Replays (`hsi replay`) make no spans: they use the `Projector` directly, never `ProjectStage`,
where the project spans are made; a replay does not create new file traces.

The SDK providers are HSI's (`hsi.infra.telemetry`, which installs them as the API globals).
Components take a `StageTelemetry` in their constructor; without one they use the API's global
providers (`StageTelemetry.current()`), which are no-ops before telemetry is set up. A
`StageTelemetry` pairs the tracer with the `Instruments` (`streams.metrics`): the per-entry stage
spans and the AI request spans record their metrics beside them.

Outcomes (label `outcome` and span attribute `hsi.outcome`), one vocabulary for all stages:
`ok` (output written, input acknowledged), `rejected` (a failure fact written: an undecodable
file, an analysis that failed; acknowledged, not retried), `failed` (left pending; the reclaimer
retries it), `skipped` (acknowledged without output: a duplicate upload, an entry already
projected, an entry of an unexpected type) and `dead` (buried in the dead stream by the reclaimer).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streams.envelope import HEADER_TRACEPARENT
from streams.metrics import INSTRUMENTATION_NAME, Instruments, error_type

__all__ = [
    "DEAD",
    "FAILED",
    "HEADER_OBSERVED_AT",
    "OK",
    "REJECTED",
    "SKIPPED",
    "StageSpans",
    "StageTelemetry",
    "ai_request",
    "end_span",
    "link_to",
    "observed_at",
    "parent_context",
    "resolve",
    "root_span",
    "traceparent_of",
]

# The earliest `observed_at` of the files behind an entry (ISO 8601), carried from the batch to
# its analysis so that the projector can measure the end-to-end latency of the event.
HEADER_OBSERVED_AT = "observed_at"

# Span attributes.
ATTR_CAMERA = "hsi.camera"
ATTR_STREAM = "hsi.stream"
ATTR_ENTRY_ID = "hsi.entry_id"
ATTR_OUTCOME = "hsi.outcome"
ATTR_RESULT = "hsi.result"  # the stage's finer word for the outcome: completed, undecodable, …
ATTR_GROUP = "messaging.consumer.group.name"
ATTR_SYSTEM = "messaging.system"

OK = "ok"
REJECTED = "rejected"
FAILED = "failed"
SKIPPED = "skipped"
DEAD = "dead"

_PROPAGATOR = TraceContextTextMapPropagator()
# A version-00 `traceparent` with nothing around it; any other form goes to the propagator.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


# --- what components record on ------------------------------------------------------------------


@dataclass(frozen=True)
class StageTelemetry:
    """The tracer and instruments a component records on."""

    tracer: Tracer
    instruments: Instruments

    @classmethod
    def current(cls) -> StageTelemetry:
        """On the API's global providers as they are now (no-ops before setup)."""
        tracer_provider = trace.get_tracer_provider()
        meter_provider = metrics.get_meter_provider()
        with _CACHE_LOCK:
            cached = _CACHE.get("current")
            if cached is not None and cached[0] is tracer_provider and cached[1] is meter_provider:
                return cached[2]
            made = cls(
                tracer_provider.get_tracer(INSTRUMENTATION_NAME),
                Instruments.create(meter_provider.get_meter(INSTRUMENTATION_NAME)),
            )
            _CACHE["current"] = (tracer_provider, meter_provider, made)
            return made


# The telemetry made for the API's current global providers, remade when they change.
_CACHE: dict[str, tuple[object, object, StageTelemetry]] = {}
_CACHE_LOCK = threading.Lock()


def resolve(telemetry: StageTelemetry | None) -> StageTelemetry:
    """The given telemetry, or the one of the API's global providers."""
    return telemetry if telemetry is not None else StageTelemetry.current()


# --- trace context in headers -------------------------------------------------------------------


def parent_context(headers: Mapping[str, Any] | None) -> Context | None:
    """The remote span context in an entry's `traceparent`, or None when it has none (or a
    malformed one)."""
    if not headers:
        return None
    value = headers.get(HEADER_TRACEPARENT)
    if not value:
        return None
    value = str(value)
    plain = _TRACEPARENT.fullmatch(value)
    if plain is not None:
        # The form HSI writes, read as the propagator reads it (without its carrier handling).
        trace_id, span_id = int(plain[1], 16), int(plain[2], 16)
        if not trace_id or not span_id:
            return None
        remote = SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(plain[3], 16))
        )
        return trace.set_span_in_context(NonRecordingSpan(remote), Context())
    context = _PROPAGATOR.extract({HEADER_TRACEPARENT: value})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def link_to(traceparent: str | None) -> Link | None:
    """A span link to the span a `traceparent` names (None when it names none)."""
    context = parent_context({HEADER_TRACEPARENT: traceparent} if traceparent else None)
    if context is None:
        return None
    return Link(trace.get_current_span(context).get_span_context())


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` of a span; None for a span without a valid context (no-op tracer)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    # What `TraceContextTextMapPropagator.inject` writes, without a context and a carrier.
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def observed_at(headers: Mapping[str, Any] | None) -> datetime | None:
    """The `observed_at` header as an aware datetime; None when absent or unreadable."""
    value = (headers or {}).get(HEADER_OBSERVED_AT)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


# --- per-entry stage spans and metrics ----------------------------------------------------------


def _recording(tracer: Tracer) -> bool:
    """Whether spans of `tracer` are recorded. A tracer whose provider exports nothing says so
    (`recording` False, `hsi.infra.tracing`): then a stage makes no span per entry (a span
    nothing exports costs ids, attributes and a context per entry) and carries the incoming
    `traceparent` on; the trace stays one trace, its stages unnamed."""
    return bool(getattr(tracer, "recording", True))


@dataclass
class _Open:
    span: Span | None
    started: float
    incoming: str | None
    outcome: str = OK
    result: str | None = None
    error: str | None = None


@dataclass
class StageSpans:
    """The spans and metrics of one batch of entries of one stage and stream.

    `start()` each entry (its span continues the entry's trace), run the work inside `use()`,
    name the outcome with `outcome()`, and leave the `with` block after the outputs are committed:
    then every span ends and the metrics are recorded. Entries in `failed()` (left pending), and
    all of them when the block raises, end as `failed`. With `spans=False` only metrics are kept.
    """

    telemetry: StageTelemetry
    stage: str
    stream: str
    camera: str
    spans: bool = True
    _open: dict[str, _Open] = field(default_factory=dict, init=False)
    _failed: dict[str, str] = field(default_factory=dict, init=False)

    def __enter__(self) -> StageSpans:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(exc)

    def start(self, entry_id: str, headers: Mapping[str, Any] | None) -> None:
        incoming = (headers or {}).get(HEADER_TRACEPARENT)
        span: Span | None = None
        if self.spans and _recording(self.telemetry.tracer):
            span = self.telemetry.tracer.start_span(
                self.stage,
                context=parent_context(headers) or Context(),
                kind=SpanKind.CONSUMER,
                attributes={
                    ATTR_CAMERA: self.camera,
                    ATTR_STREAM: self.stream,
                    ATTR_ENTRY_ID: entry_id,
                    ATTR_GROUP: self.stage,
                    ATTR_SYSTEM: "redis",
                },
            )
        self._open[entry_id] = _Open(
            span, time.perf_counter(), None if incoming is None else str(incoming)
        )

    @contextmanager
    def use(self, entry_id: str) -> Iterator[None]:
        """Make the entry's span the current one (so AI calls and logs join its trace)."""
        opened = self._open.get(entry_id)
        if opened is None:
            yield
            return
        if opened.span is None:
            # No span of its own (nothing records spans): the incoming trace is the current one,
            # so AI calls and log lines still join the file's trace.
            incoming = parent_context({HEADER_TRACEPARENT: opened.incoming})
            if incoming is None:
                yield
                return
            token = otel_context.attach(incoming)
            try:
                yield
            finally:
                otel_context.detach(token)
            return
        with trace.use_span(opened.span, end_on_exit=False, record_exception=False):
            yield

    def headers(self, entry_id: str) -> dict[str, str]:
        """The output's `traceparent`: this stage's span, else the input's (tracing is off)."""
        opened = self._open.get(entry_id)
        if opened is None:
            return {}
        value = traceparent_of(opened.span) if opened.span is not None else None
        value = value or opened.incoming
        return {HEADER_TRACEPARENT: value} if value else {}

    def outcome(self, entry_id: str, outcome: str, result: str | None = None) -> None:
        opened = self._open.get(entry_id)
        if opened is not None:
            opened.outcome = outcome
            opened.result = result

    def failed(self, failures: Mapping[str, str]) -> None:
        """Entries left pending, with their error texts."""
        self._failed.update(failures)

    def finish(self, error: BaseException | None = None) -> None:
        now = time.perf_counter()
        instruments = self.telemetry.instruments
        # Label sets made once per outcome and counters added once per label set: the same
        # series and sums as one `add(1)` per entry.
        labels: dict[str, dict[str, str]] = {}
        processed: dict[str, int] = {}
        earliest: dict[str, float] = {}
        errors: dict[str, int] = {}
        for entry_id, opened in self._open.items():
            outcome, message = opened.outcome, None
            if error is not None:
                outcome, message = FAILED, f"{type(error).__name__}: {error}"
            elif entry_id in self._failed:
                outcome, message = FAILED, self._failed[entry_id]
            outcome_labels = labels.get(outcome)
            if outcome_labels is None:
                outcome_labels = {"stage": self.stage, "camera": self.camera, "outcome": outcome}
                labels[outcome] = outcome_labels
            processed[outcome] = processed.get(outcome, 0) + 1
            if opened.started < earliest.get(outcome, now):
                earliest[outcome] = opened.started
            if message is not None:
                kind = error_type(error or message)
                errors[kind] = errors.get(kind, 0) + 1
            span = opened.span
            if span is None:
                continue
            span.set_attribute(ATTR_OUTCOME, outcome)
            if opened.result:
                span.set_attribute(ATTR_RESULT, opened.result)
            if message is not None:
                if error is not None:
                    span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, message[:300]))
            span.end()
        self._open.clear()
        for outcome, count in processed.items():
            # One observation per batch and outcome: the batch's time, from its first entry's
            # start to the commit (a histogram record costs tens of µs; per entry it was the
            # largest single cost of a stage moving small entries).
            instruments.stage_duration.record(now - earliest.get(outcome, now), labels[outcome])
            instruments.entries_processed.add(count, labels[outcome])
        for kind, count in errors.items():
            instruments.pipeline_errors.add(count, {"stage": self.stage, "error_type": kind})


# --- AI requests --------------------------------------------------------------------------------


@asynccontextmanager
async def ai_request(
    telemetry: StageTelemetry,
    name: str,
    backend: str,
    *,
    bad_input: tuple[type[BaseException], ...] = (),
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> AsyncIterator[Span]:
    """A child span (`ai.detect`, `ai.analyze`) of the current span around one AI request, and
    its duration and errors by backend. Errors in `bad_input` are the input's fault (an
    undecodable file): recorded with outcome `bad_input`, not as errors of the backend."""
    instruments = telemetry.instruments
    started = time.perf_counter()
    # Nothing records spans: no child span (the stage's trace stays the current one), the
    # duration and errors all the same; the invalid span takes the span calls and drops them.
    recording = _recording(telemetry.tracer)
    span = (
        telemetry.tracer.start_span(
            name,
            kind=SpanKind.CLIENT,
            attributes={"hsi.ai.backend": backend, **(attributes or {})},
            record_exception=False,
            set_status_on_exception=False,
        )
        if recording
        else INVALID_SPAN
    )
    current = (
        trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        )
        if recording
        else contextlib.nullcontext()
    )
    with current:
        outcome = OK
        try:
            yield span
        except BaseException as exc:
            if isinstance(exc, bad_input):
                outcome = "bad_input"
            else:
                outcome = "error"
                instruments.ai_request_errors.add(
                    1, {"backend": backend, "error_type": error_type(exc)}
                )
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
            raise
        finally:
            elapsed = time.perf_counter() - started
            span.set_attribute("hsi.ai.outcome", outcome)
            instruments.ai_request_duration.record(
                elapsed, {"backend": backend, "outcome": outcome}
            )


def root_span(
    telemetry: StageTelemetry,
    name: str,
    *,
    links: list[Link] | None = None,
    start_time: float | None = None,
    kind: SpanKind = SpanKind.PRODUCER,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Span:
    """A span that starts a trace (a file's `watch`, an event's `batch`), never a child of
    whatever span happens to be current. `start_time` is epoch seconds."""
    return telemetry.tracer.start_span(
        name,
        context=Context(),
        kind=kind,
        links=links or (),
        start_time=None if start_time is None else int(start_time * 1e9),
        attributes=dict(attributes or {}),
    )


def end_span(span: Span, outcome: str, *, error: BaseException | None = None) -> None:
    span.set_attribute(ATTR_OUTCOME, outcome)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))
    span.end()

"""Metrics of the write side, on the OpenTelemetry API only (never the SDK).

`Instruments` are every HSI instrument, made on a meter (`hsi.infra.telemetry` owns the SDK meter
provider; without one, the API's global provider, a no-op before setup). The stages record on
them through a `StageTelemetry` (`streams.tracing`), which pairs them with a tracer.

Metric labels are bounded: stage, camera, outcome, backend, error type, label, risk level,
close reason, channel. Entry ids and paths are span attributes only, never labels; an error is
labelled by its type (`error_type`), never by its message. The outcome values are the stages'
vocabulary (`streams.tracing`).
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter

__all__ = [
    "AI_BUCKETS",
    "ALERT_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "END_TO_END_BUCKETS",
    "INSTRUMENTATION_NAME",
    "STAGE_BUCKETS",
    "Instruments",
    "error_type",
]

INSTRUMENTATION_NAME = "hsi"

# Histogram buckets (seconds). A stage takes milliseconds to a few seconds (detection on CPU);
# an AI request up to minutes (an LLM on a small GPU); end to end includes the batch window
# (90 s by default) and the analysis after it.
STAGE_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
AI_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
END_TO_END_BUCKETS: tuple[float, ...] = (
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 3, 5, 10, 20, 50, 100, 200)
ALERT_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
)  # fmt: skip


@dataclass(frozen=True)
class Instruments:
    """Every HSI instrument. Attributes each expects:

    - `stage_duration` `hsi_stage_duration_seconds` (one observation per batch of entries a
      stage handled and outcome; the watcher's, per file): stage, camera, outcome
    - `entries_processed` `hsi_entries_processed_total`: stage, camera, outcome
    - `detections_processed` `hsi_detections_processed_total`: camera, label
    - `events_created` `hsi_events_created_total`: camera, risk_level
    - `pipeline_errors` `hsi_pipeline_errors_total`: stage, error_type
    - `ai_request_duration` `hsi_ai_request_duration_seconds`: backend, outcome
    - `ai_request_errors` `hsi_ai_request_errors_total`: backend, error_type
    - `end_to_end_latency` `hsi_end_to_end_latency_seconds`: camera
    - `dedupe_hits` `hsi_dedupe_hits_total`: camera
    - `batch_size` `hsi_batch_size` (detections per closed batch): camera, reason
    - `alerts_sent` `hsi_alerts_sent_total`: channel
    - `alerts_failed` `hsi_alerts_failed_total`: channel, reason
    - `alert_delivery_latency` `hsi_alert_delivery_seconds` (from the analysis to the channel's
      confirmation): channel

    `create()` on a meter that already has them returns the same instruments (the SDK keeps one
    instrument per name and meter), so there is never a duplicated series.
    """

    stage_duration: Histogram
    entries_processed: Counter
    detections_processed: Counter
    events_created: Counter
    pipeline_errors: Counter
    ai_request_duration: Histogram
    ai_request_errors: Counter
    end_to_end_latency: Histogram
    dedupe_hits: Counter
    batch_size: Histogram
    alerts_sent: Counter
    alerts_failed: Counter
    alert_delivery_latency: Histogram

    @classmethod
    def create(cls, meter: Meter) -> Instruments:
        def counter(name: str, description: str) -> Counter:
            return meter.create_counter(name, description=description)

        def histogram(
            name: str, buckets: tuple[float, ...], description: str, unit: str = "s"
        ) -> Histogram:
            return meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=buckets,
            )

        return cls(
            stage_duration=histogram(
                "hsi_stage_duration_seconds",
                STAGE_BUCKETS,
                "Time one pipeline stage spent on one batch of stream entries, by outcome.",
            ),
            entries_processed=counter(
                "hsi_entries_processed_total", "Stream entries a stage finished, by outcome."
            ),
            detections_processed=counter(
                "hsi_detections_processed_total", "Objects detected, by camera and label."
            ),
            events_created=counter(
                "hsi_events_created_total", "Security events created, by camera and risk level."
            ),
            pipeline_errors=counter(
                "hsi_pipeline_errors_total", "Errors in pipeline stages, by stage and error type."
            ),
            ai_request_duration=histogram(
                "hsi_ai_request_duration_seconds",
                AI_BUCKETS,
                "Duration of requests to the detector and analyzer services.",
            ),
            ai_request_errors=counter(
                "hsi_ai_request_errors_total",
                "Failed requests to the detector and analyzer services.",
            ),
            end_to_end_latency=histogram(
                "hsi_end_to_end_latency_seconds",
                END_TO_END_BUCKETS,
                "From a file appearing to its event being stored.",
            ),
            dedupe_hits=counter(
                "hsi_dedupe_hits_total", "Files skipped because their content was seen before."
            ),
            batch_size=histogram(
                "hsi_batch_size",
                BATCH_SIZE_BUCKETS,
                "Detections in a batch when it closes.",
                unit="",  # a count
            ),
            alerts_sent=counter(
                "hsi_alerts_sent_total",
                "Alerts delivered, by channel (once per event and channel).",
            ),
            alerts_failed=counter(
                "hsi_alerts_failed_total",
                "Alert delivery attempts that failed or whose outcome is unknown.",
            ),
            alert_delivery_latency=histogram(
                "hsi_alert_delivery_seconds",
                ALERT_BUCKETS,
                "From an analysis being written to its alert being delivered.",
            ),
        )


def error_type(error: BaseException | str) -> str:
    """A bounded label for an error: its class name (from `Name: message` for an error text)."""
    if isinstance(error, BaseException):
        return type(error).__name__
    name, sep, _ = error.partition(":")
    name = name.strip()
    if sep and name.isidentifier():
        return name
    return "error"

"""The analyze stage: `batch.closed` → `analysis.completed` or `analysis.failed`.

A model that answered but gave no usable assessment is a fact (`analysis.failed`), never a
made-up score. An analyzer that is unreachable leaves the batch pending: the reclaimer retries
it, and after `max_deliveries` it becomes a dead letter that `hsi dlq retry` can bring back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import PurePosixPath

from redis.asyncio import Redis, RedisCluster

from streams.analyzers import Analyzer, AnalyzerError, AnalyzerUnavailableError
from streams.analyzers.base import BatchSummary, DetectionLine
from streams.contract import HandlerResult, StreamEntry
from streams.envelope import read_fields
from streams.names import Group, StreamNames
from streams.schemas import AnalysisCompleted, AnalysisFailed, BatchClosed, EntryError
from streams.stages.outcome import Outcome, commit
from streams.tracing import (
    FAILED,
    HEADER_OBSERVED_AT,
    OK,
    REJECTED,
    SKIPPED,
    StageSpans,
    StageTelemetry,
    ai_request,
    resolve,
)

logger = logging.getLogger("hsi.analyze")


def _now() -> datetime:
    return datetime.now(UTC)


def summarize(batch: BatchClosed, timezone: str | tzinfo) -> BatchSummary:
    """The analyzer's view of a closed batch: one line per detected object."""
    lines = tuple(
        DetectionLine(
            label=obj.label,
            confidence=obj.confidence,
            captured_at=detection.captured_at,
            file_name=PurePosixPath(detection.path).name,
        )
        for detection in batch.detections
        for obj in detection.objects
    )
    return BatchSummary(
        camera=batch.camera_id,
        window_start=batch.window_start,
        window_end=max(batch.window_end, batch.window_start),
        detections=lines,
        timezone=timezone,
    )


class AnalyzeStage:
    """The batch handler of group `analyze`."""

    group = Group.ANALYZE

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        names: StreamNames,
        analyzer: Analyzer,
        timezone: str | tzinfo = "UTC",
        clock: Callable[[], datetime] = _now,
        telemetry: StageTelemetry | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        self._analyzer = analyzer
        self._timezone = timezone
        self._clock = clock
        self._telemetry = telemetry

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        camera, _ = self._names.parse(stream)
        target = self._names.analyses(camera)
        telemetry = resolve(self._telemetry)
        outcome = Outcome()
        levels: list[str] = []
        with StageSpans(telemetry, self.group.value, stream, camera) as spans:
            for entry_id, fields in entries:
                try:
                    entry, headers = read_fields(fields)
                except EntryError as exc:
                    spans.start(entry_id, None)
                    spans.outcome(entry_id, FAILED, "unreadable")
                    outcome.failed[entry_id] = f"unreadable entry: {exc}"
                    continue
                spans.start(entry_id, headers)
                if not isinstance(entry, BatchClosed):
                    spans.outcome(entry_id, SKIPPED, "unexpected_entry")
                    outcome.done.append(entry_id)
                    continue
                with spans.use(entry_id):
                    result = await self._analyze(telemetry, camera, entry_id, entry)
                if isinstance(result, str):
                    spans.outcome(entry_id, FAILED, "analyzer_unavailable")
                    outcome.failed[entry_id] = result
                    continue
                out_headers = spans.headers(entry_id)
                if HEADER_OBSERVED_AT in headers:
                    out_headers[HEADER_OBSERVED_AT] = str(headers[HEADER_OBSERVED_AT])
                if isinstance(result, AnalysisFailed):
                    spans.outcome(entry_id, REJECTED, "analysis_failed")
                else:
                    spans.outcome(entry_id, OK, "completed")
                    levels.append(result.risk_level)
                outcome.emit(target, result, out_headers, source=entry_id)
                outcome.done.append(entry_id)
            spans.failed(outcome.failed)
            await commit(self._redis, stream, self.group.value, outcome)
        for level in levels:
            telemetry.instruments.events_created.add(1, {"camera": camera, "risk_level": level})
        return HandlerResult(failed=outcome.failed)

    async def _analyze(
        self, telemetry: StageTelemetry, camera: str, entry_id: str, entry: BatchClosed
    ) -> AnalysisCompleted | AnalysisFailed | str:
        """The analysis fact, or an error text to leave the batch pending."""
        try:
            async with ai_request(
                telemetry,
                "ai.analyze",
                self._analyzer.name,
                attributes={"hsi.batch_id": entry.batch_id},
            ) as span:
                analysis = await self._analyzer.analyze(summarize(entry, self._timezone))
                span.set_attribute("hsi.ai.analyzer", analysis.analyzer)
                if analysis.model:
                    span.set_attribute("gen_ai.request.model", analysis.model)
                span.set_attribute("hsi.ai.latency_ms", round(analysis.latency_ms, 2))
                if analysis.prompt_tokens is not None:
                    span.set_attribute("gen_ai.usage.input_tokens", analysis.prompt_tokens)
                if analysis.completion_tokens is not None:
                    span.set_attribute("gen_ai.usage.output_tokens", analysis.completion_tokens)
                span.set_attribute("hsi.risk_score", analysis.risk_score)
        except AnalyzerUnavailableError as exc:
            return f"{type(exc).__name__}: {exc}"
        except AnalyzerError as exc:
            logger.warning(
                "analyze.failed",
                extra={"camera": camera, "batch_id": entry.batch_id, "error": str(exc)},
            )
            return AnalysisFailed(
                camera_id=camera,
                batch_id=entry.batch_id,
                batch_entry_id=entry_id,
                analyzer=self._analyzer.name,
                error=str(exc)[:500],
                failed_at=self._clock(),
            )
        return AnalysisCompleted(
            camera_id=camera,
            batch_id=entry.batch_id,
            batch_entry_id=entry_id,
            risk_score=analysis.risk_score,
            risk_level=analysis.risk_level.value,
            summary=analysis.summary,
            reasoning=analysis.reasoning,
            analyzer=analysis.analyzer,
            model=analysis.model,
            prompt_hash=analysis.prompt_hash,
            latency_ms=round(analysis.latency_ms, 2),
            prompt_tokens=analysis.prompt_tokens,
            completion_tokens=analysis.completion_tokens,
            analyzed_at=self._clock(),
        )

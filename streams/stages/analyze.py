"""The analyze stage: `batch.closed` → `analysis.completed` or `analysis.failed`.

A model that answered but gave no usable assessment is a fact (`analysis.failed`), never a
made-up score. An analyzer that is unreachable leaves the batch pending: the reclaimer retries
it, and after `max_deliveries` it becomes a dead letter that `hsi dlq retry` can bring back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import PurePosixPath
from typing import Any

from redis.asyncio import Redis, RedisCluster

from streams.analyzers import Analyzer, AnalyzerError, AnalyzerUnavailableError
from streams.analyzers.base import Analysis, BatchSummary, DetectionLine
from streams.clock import utc_now
from streams.contract import HandlerResult, StreamEntry
from streams.names import Group, StreamNames, camera_name_of
from streams.schemas import AnalysisCompleted, AnalysisFailed, BatchClosed
from streams.stages.loop import EntryBatch, EntryVerdict, Headers, StageLoop
from streams.stages.outcome import commit
from streams.tracing import HEADER_OBSERVED_AT, OK, REJECTED, StageTelemetry, ai_request

logger = logging.getLogger("hsi.analyze")


def judgement_of(analysis: Analysis) -> dict[str, Any]:
    """The judgement fields (`streams.schemas.JUDGEMENT_FIELDS`) of an analyzer's answer."""
    return {
        "risk_score": analysis.risk_score,
        "risk_level": analysis.risk_level.value,
        "summary": analysis.summary,
        "reasoning": analysis.reasoning,
        "analyzer": analysis.analyzer,
        "model": analysis.model,
        "prompt_hash": analysis.prompt_hash,
        "latency_ms": round(analysis.latency_ms, 2),
        "prompt_tokens": analysis.prompt_tokens,
        "completion_tokens": analysis.completion_tokens,
    }


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
        camera_name=camera_name_of(d.path for d in batch.detections),
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
        clock: Callable[[], datetime] = utc_now,
        telemetry: StageTelemetry | None = None,
    ) -> None:
        self._analyzer = analyzer
        self._timezone = timezone
        self._clock = clock
        self._loop = StageLoop(
            redis=redis,
            names=names,
            group=self.group,
            accepts=BatchClosed,
            telemetry=telemetry,
            output=names.analyses,
        )

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        handled = await self._loop.run(stream, entries, self._decide, self._loop.writing(commit))
        events_created = handled.batch.telemetry.instruments.events_created
        for _, verdict in handled.verdicts:
            if isinstance(verdict.output, AnalysisCompleted):
                events_created.add(
                    1, {"camera": handled.batch.camera, "risk_level": verdict.output.risk_level}
                )
        return handled.result

    async def _decide(
        self, batch: EntryBatch, entry_id: str, entry: BatchClosed, headers: Headers
    ) -> EntryVerdict:
        result = await self._analyze(batch.telemetry, batch.camera, entry_id, entry)
        if isinstance(result, str):
            return EntryVerdict.pending("analyzer_unavailable", result)
        out_headers = batch.spans.headers(entry_id)
        if HEADER_OBSERVED_AT in headers:
            out_headers[HEADER_OBSERVED_AT] = str(headers[HEADER_OBSERVED_AT])
        if isinstance(result, AnalysisFailed):
            return EntryVerdict(REJECTED, "analysis_failed", result, out_headers)
        return EntryVerdict(OK, "completed", result, out_headers)

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
            **judgement_of(analysis),
            analyzed_at=self._clock(),
        )

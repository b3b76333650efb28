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
from streams.envelope import HEADER_TRACEPARENT, read_fields
from streams.names import Group, StreamNames
from streams.reclaim import HandlerResult, StreamEntry
from streams.schemas import AnalysisCompleted, AnalysisFailed, BatchClosed, EntryError
from streams.stages.outcome import Outcome, commit

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
    ) -> None:
        self._redis = redis
        self._names = names
        self._analyzer = analyzer
        self._timezone = timezone
        self._clock = clock

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        camera, _ = self._names.parse(stream)
        target = self._names.analyses(camera)
        outcome = Outcome()
        for entry_id, fields in entries:
            try:
                entry, headers = read_fields(fields)
            except EntryError as exc:
                outcome.failed[entry_id] = f"unreadable entry: {exc}"
                continue
            if not isinstance(entry, BatchClosed):
                outcome.done.append(entry_id)
                continue
            out_headers = {}
            if HEADER_TRACEPARENT in headers:
                out_headers[HEADER_TRACEPARENT] = str(headers[HEADER_TRACEPARENT])
            try:
                analysis = await self._analyzer.analyze(summarize(entry, self._timezone))
            except AnalyzerUnavailableError as exc:
                outcome.failed[entry_id] = f"{type(exc).__name__}: {exc}"
                continue
            except AnalyzerError as exc:
                logger.warning(
                    "analyze.failed",
                    extra={"camera": camera, "batch_id": entry.batch_id, "error": str(exc)},
                )
                failed = AnalysisFailed(
                    camera_id=camera,
                    batch_id=entry.batch_id,
                    batch_entry_id=entry_id,
                    analyzer=self._analyzer.name,
                    error=str(exc)[:500],
                    failed_at=self._clock(),
                )
                outcome.emit(target, failed, out_headers)
                outcome.done.append(entry_id)
                continue
            completed = AnalysisCompleted(
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
            outcome.emit(target, completed, out_headers)
            outcome.done.append(entry_id)
        await commit(self._redis, stream, self.group.value, outcome)
        return HandlerResult(failed=outcome.failed)

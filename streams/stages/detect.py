"""The detect stage: `file.observed` → `detection.completed` or `detection.failed`.

An undecodable (or vanished) file is a fact at once (`detection.failed`). A detector that is
unreachable, timing out or answering garbage leaves the entry pending: the reclaimer runs it
again later and, after `max_deliveries`, buries it in the camera's dead stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis, RedisCluster

from streams.contract import HandlerResult, StreamEntry
from streams.detectors import (
    Detector,
    DetectorError,
    DetectorUnavailableError,
    UndecodableMediaError,
)
from streams.envelope import read_fields
from streams.names import Group, StreamNames
from streams.paths import PathOutsideRootError, confine
from streams.schemas import (
    Box,
    DetectedObject,
    DetectionCompleted,
    DetectionFailed,
    EntryError,
    FileObserved,
)
from streams.stages.outcome import Outcome, commit
from streams.tracing import (
    FAILED,
    OK,
    REJECTED,
    SKIPPED,
    StageSpans,
    StageTelemetry,
    ai_request,
    resolve,
)

logger = logging.getLogger("hsi.detect")


def _now() -> datetime:
    return datetime.now(UTC)


class DetectStage:
    """The batch handler of group `detect`."""

    group = Group.DETECT

    def __init__(
        self,
        *,
        redis: Redis | RedisCluster,
        names: StreamNames,
        detector: Detector,
        camera_root: Path,
        concurrency: int = 2,
        clock: Callable[[], datetime] = _now,
        telemetry: StageTelemetry | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        self._detector = detector
        self._root = camera_root
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._telemetry = telemetry

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        camera, _ = self._names.parse(stream)
        target = self._names.detections(camera)
        telemetry = resolve(self._telemetry)
        root = self._root.resolve()  # once per batch, not per file (`confine`)
        with StageSpans(telemetry, self.group.value, stream, camera) as spans:
            results = await asyncio.gather(
                *(self._traced(spans, root, entry_id, fields) for entry_id, fields in entries)
            )
            outcome = Outcome()
            labels: dict[str, int] = {}
            for (entry_id, _fields), result in zip(entries, results, strict=True):
                if isinstance(result, str):
                    outcome.failed[entry_id] = result
                    continue
                if result is not None:
                    entry = result
                    outcome.emit(target, entry, spans.headers(entry_id), source=entry_id)
                    if isinstance(entry, DetectionCompleted):
                        for found in entry.objects:
                            labels[found.label] = labels.get(found.label, 0) + 1
                outcome.done.append(entry_id)
            spans.failed(outcome.failed)
            await commit(self._redis, stream, self.group.value, outcome)
        for label, count in labels.items():  # one add per label, not per object
            telemetry.instruments.detections_processed.add(
                count, {"camera": camera, "label": label}
            )
        return HandlerResult(failed=outcome.failed)

    async def _traced(
        self, spans: StageSpans, root: Path, entry_id: str, fields: dict[bytes, bytes]
    ) -> DetectionCompleted | DetectionFailed | str | None:
        """The output entry; an error text to leave it pending; None to just ack. Runs in the
        entry's `detect` span, whose outcome it names."""
        try:
            entry, headers = read_fields(fields)
        except EntryError as exc:
            spans.start(entry_id, None)
            spans.outcome(entry_id, FAILED, "unreadable")
            return f"unreadable entry: {exc}"
        spans.start(entry_id, headers)
        if not isinstance(entry, FileObserved):
            logger.warning(
                "detect.unexpected_entry", extra={"entry_id": entry_id, "type": entry.type}
            )
            spans.outcome(entry_id, SKIPPED, "unexpected_entry")
            return None
        with spans.use(entry_id):
            result = await self._one(spans.telemetry, root, entry_id, entry)
        if isinstance(result, str):
            spans.outcome(entry_id, FAILED, "detector_unavailable")
        elif isinstance(result, DetectionFailed):
            spans.outcome(entry_id, REJECTED, "undecodable")
        else:
            spans.outcome(entry_id, OK, "completed")
        return result

    async def _one(
        self, telemetry: StageTelemetry, root: Path, entry_id: str, entry: FileObserved
    ) -> DetectionCompleted | DetectionFailed | str:
        """The output entry, or an error text to leave the input pending (`root`: the camera
        root, resolved)."""
        try:
            path = confine(root, entry.path, root_resolved=True)
            async with (
                self._limit,
                ai_request(
                    telemetry,
                    "ai.detect",
                    self._detector.name,
                    bad_input=(UndecodableMediaError, FileNotFoundError),
                    attributes={"hsi.media_kind": entry.media_kind},
                ) as span,
            ):
                result = await self._detector.detect(path, entry.media_kind)
                span.set_attribute("hsi.ai.model", result.detector)
                span.set_attribute("hsi.ai.inference_ms", round(result.inference_ms, 2))
                span.set_attribute("hsi.ai.frames", result.frames)
                span.set_attribute("hsi.ai.objects", len(result.objects))
        except (UndecodableMediaError, PathOutsideRootError, FileNotFoundError) as exc:
            logger.warning(
                "detect.undecodable",
                extra={"camera": entry.camera_id, "entry_id": entry_id, "error": str(exc)},
            )
            return self._failed(entry_id, entry, str(exc))
        except (DetectorUnavailableError, DetectorError) as exc:
            return f"{type(exc).__name__}: {exc}"
        objects = tuple(
            DetectedObject(
                label=o.label,
                confidence=round(o.confidence, 4),
                bbox=Box(
                    x=round(o.bbox.x, 1),
                    y=round(o.bbox.y, 1),
                    width=round(o.bbox.width, 1),
                    height=round(o.bbox.height, 1),
                ),
            )
            for o in result.objects
        )
        completed = DetectionCompleted(
            camera_id=entry.camera_id,
            file_entry_id=entry_id,
            path=entry.path,
            sha256=entry.sha256,
            media_kind=entry.media_kind,
            captured_at=entry.captured_at,
            observed_at=entry.observed_at,
            objects=objects,
            image_width=result.image_width,
            image_height=result.image_height,
            detector=result.detector,
            inference_ms=round(result.inference_ms, 2),
            frames=result.frames,
            completed_at=self._clock(),
        )
        return completed

    def _failed(self, entry_id: str, entry: FileObserved, error: str) -> DetectionFailed:
        return DetectionFailed(
            camera_id=entry.camera_id,
            file_entry_id=entry_id,
            path=entry.path,
            sha256=entry.sha256,
            captured_at=entry.captured_at,
            observed_at=entry.observed_at,
            error=error[:500],
            detector=self._detector.name,
            failed_at=self._clock(),
        )

"""The detect stage: `file.observed` → `detection.completed` or `detection.failed`.

An undecodable (or vanished) file is a fact at once (`detection.failed`). A detector that is
unreachable, timing out or answering garbage leaves the entry pending: the reclaimer runs it
again later and, after `max_deliveries`, buries it in the camera's dead stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from redis.asyncio import Redis, RedisCluster

from streams.clock import utc_now
from streams.contract import HandlerResult, StreamEntry
from streams.detectors import (
    Detector,
    DetectorError,
    DetectorUnavailableError,
    UndecodableMediaError,
)
from streams.names import Group, StreamNames
from streams.paths import PathOutsideRootError, confine
from streams.schemas import (
    Box,
    DetectedObject,
    DetectionCompleted,
    DetectionFailed,
    Entry,
    FileObserved,
)
from streams.stages.loop import EntryBatch, EntryVerdict, Headers, StageLoop
from streams.stages.outcome import commit
from streams.tracing import OK, REJECTED, StageTelemetry, ai_request

logger = logging.getLogger("hsi.detect")


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
        clock: Callable[[], datetime] = utc_now,
        telemetry: StageTelemetry | None = None,
    ) -> None:
        self._detector = detector
        self._root = camera_root
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._loop = StageLoop(
            redis=redis,
            names=names,
            group=self.group,
            accepts=FileObserved,
            telemetry=telemetry,
            unexpected=self._unexpected,
            output=names.detections,
            concurrent=True,
        )

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        root = self._root.resolve()  # once per batch, not per file (`confine`)
        decide = functools.partial(self._decide, root=root)
        handled = await self._loop.run(stream, entries, decide, self._loop.writing(commit))
        labels: dict[str, int] = {}
        for _, verdict in handled.verdicts:
            if isinstance(verdict.output, DetectionCompleted):
                for found in verdict.output.objects:
                    labels[found.label] = labels.get(found.label, 0) + 1
        detections_processed = handled.batch.telemetry.instruments.detections_processed
        for label, count in labels.items():  # one add per label, not per object
            detections_processed.add(count, {"camera": handled.batch.camera, "label": label})
        return handled.result

    async def _decide(
        self, batch: EntryBatch, entry_id: str, entry: FileObserved, _: Headers, *, root: Path
    ) -> EntryVerdict:
        result = await self._one(batch.telemetry, root, entry_id, entry)
        if isinstance(result, str):
            return EntryVerdict.pending("detector_unavailable", result)
        headers = batch.spans.headers(entry_id)
        if isinstance(result, DetectionFailed):
            return EntryVerdict(REJECTED, "undecodable", result, headers)
        return EntryVerdict(OK, "completed", result, headers)

    @staticmethod
    def _unexpected(entry_id: str, entry: Entry) -> None:
        logger.warning("detect.unexpected_entry", extra={"entry_id": entry_id, "type": entry.type})

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

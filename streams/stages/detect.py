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

from streams.detectors import (
    Detector,
    DetectorError,
    DetectorUnavailableError,
    UndecodableMediaError,
)
from streams.envelope import HEADER_TRACEPARENT, read_fields
from streams.names import Group, StreamNames
from streams.paths import PathOutsideRootError, confine
from streams.reclaim import HandlerResult, StreamEntry
from streams.schemas import (
    Box,
    DetectedObject,
    DetectionCompleted,
    DetectionFailed,
    EntryError,
    FileObserved,
)
from streams.stages.outcome import Outcome, commit

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
    ) -> None:
        self._redis = redis
        self._names = names
        self._detector = detector
        self._root = camera_root
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock

    async def handle(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        camera, _ = self._names.parse(stream)
        target = self._names.detections(camera)
        results = await asyncio.gather(
            *(self._one(entry_id, fields) for entry_id, fields in entries)
        )
        outcome = Outcome()
        for (entry_id, _fields), result in zip(entries, results, strict=True):
            if isinstance(result, str):
                outcome.failed[entry_id] = result
                continue
            if result is not None:
                entry, headers = result
                outcome.emit(target, entry, headers)
            outcome.done.append(entry_id)
        await commit(self._redis, stream, self.group.value, outcome)
        return HandlerResult(failed=outcome.failed)

    async def _one(
        self, entry_id: str, fields: dict[bytes, bytes]
    ) -> tuple[DetectionCompleted | DetectionFailed, dict[str, str]] | str | None:
        """The output entry and headers; an error text to leave it pending; None to just ack."""
        try:
            entry, headers = read_fields(fields)
        except EntryError as exc:
            return f"unreadable entry: {exc}"
        if not isinstance(entry, FileObserved):
            logger.warning(
                "detect.unexpected_entry", extra={"entry_id": entry_id, "type": entry.type}
            )
            return None
        out_headers = {}
        if HEADER_TRACEPARENT in headers:
            out_headers[HEADER_TRACEPARENT] = str(headers[HEADER_TRACEPARENT])
        try:
            path = confine(self._root, entry.path)
            async with self._limit:
                result = await self._detector.detect(path, entry.media_kind)
        except (UndecodableMediaError, PathOutsideRootError, FileNotFoundError) as exc:
            logger.warning(
                "detect.undecodable",
                extra={"camera": entry.camera_id, "entry_id": entry_id, "error": str(exc)},
            )
            return self._failed(entry_id, entry, str(exc)), out_headers
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
        return completed, out_headers

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

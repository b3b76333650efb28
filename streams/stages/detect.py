"""The detect stage: `file.observed` → `detection.completed` or `detection.failed`.

An undecodable (or vanished) file is a fact at once (`detection.failed`). A detector that is
unreachable, timing out or answering garbage leaves the entry pending: the reclaimer runs it
again later and, after `max_deliveries`, buries it in the camera's dead stream.

Zones (`streams.zones`): an object whose reference point lies in one of the camera's `ignore`
zones is dropped (counted in `ignored`), every other object is tagged with the zones it is in,
and the entry names the zones file's version.

A detector that compares a file with the camera's previous one (the embedded detector's motion
mode) gets the image entry that precedes the file on the camera's files stream: the stream
itself is the state, so a file detected again (reclaimed, replayed) is compared with the same
file, whichever consumer runs it and in whatever order; the detection entry names it.
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
from streams.envelope import read_fields
from streams.names import Group, StreamNames
from streams.paths import Confiner, PathOutsideRootError
from streams.replies import reply_text
from streams.schemas import (
    Box,
    DetectedObject,
    DetectionCompleted,
    DetectionFailed,
    Entry,
    EntryError,
    FileObserved,
)
from streams.stages.loop import EntryBatch, EntryVerdict, Headers, StageLoop
from streams.stages.outcome import commit
from streams.tracing import OK, REJECTED, StageTelemetry, ai_request
from streams.zones import NO_ZONES, ZoneSet, reference_point, zones_at

logger = logging.getLogger("hsi.detect")

REFERENCE_LOOKBACK = 4  # entries read back for the previous image (a video between is skipped)


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
        zones: ZoneSet = NO_ZONES,
    ) -> None:
        self._zones = zones
        self._redis = redis
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
        root = Confiner(self._root)  # each folder resolved once per batch, not per file
        references = await self._references(stream, entries)
        decide = functools.partial(self._decide, root=root, references=references)
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

    async def _references(
        self, stream: str, entries: list[StreamEntry]
    ) -> dict[str, tuple[str, FileObserved]]:
        """Each entry's previous image on `stream` (id and entry), for a detector that
        `uses_reference`; one pipelined read for the batch."""
        if not self._detector.uses_reference or not entries:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xrevrange(stream, max=f"({entry_id}", min="-", count=REFERENCE_LOOKBACK)
            replies = await pipe.execute()
        found: dict[str, tuple[str, FileObserved]] = {}
        for (entry_id, _), earlier in zip(entries, replies, strict=True):
            for reference_id, fields in earlier:
                try:
                    reference, _ = read_fields(fields)
                except EntryError:
                    continue
                if isinstance(reference, FileObserved) and reference.media_kind == "image":
                    found[entry_id] = (reply_text(reference_id), reference)
                    break
        return found

    async def _decide(
        self,
        batch: EntryBatch,
        entry_id: str,
        entry: FileObserved,
        _: Headers,
        *,
        root: Confiner,
        references: dict[str, tuple[str, FileObserved]],
    ) -> EntryVerdict:
        result = await self._one(batch.telemetry, root, entry_id, entry, references.get(entry_id))
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
        self,
        telemetry: StageTelemetry,
        root: Confiner,
        entry_id: str,
        entry: FileObserved,
        previous: tuple[str, FileObserved] | None,
    ) -> DetectionCompleted | DetectionFailed | str:
        """The output entry, or an error text to leave the input pending (`root`: the camera
        root's confinement; `previous`: the camera's previous image, id and entry)."""
        reference_id, reference = None, None
        if previous is not None:
            try:
                reference = root(previous[1].path)
                reference_id = previous[0]
            except PathOutsideRootError:
                pass  # a previous entry naming a path outside the root is no reference
        try:
            path = root(entry.path)
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
                result = await self._detector.detect(path, entry.media_kind, reference=reference)
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
        zones = self._zones.of(entry.camera_id)
        objects: list[DetectedObject] = []
        ignored = 0
        for o in result.objects:
            box = Box(
                x=round(o.bbox.x, 1),
                y=round(o.bbox.y, 1),
                width=round(o.bbox.width, 1),
                height=round(o.bbox.height, 1),
            )
            point = reference_point(
                box.x, box.y, box.width, box.height, result.image_width, result.image_height
            )
            tags, ignore = zones_at(zones, point)
            if ignore:
                ignored += 1
                continue
            objects.append(
                DetectedObject(
                    label=o.label,
                    confidence=round(o.confidence, 4),
                    bbox=box,
                    zones=tags,
                    frame_seconds=o.frame_seconds,
                )
            )
        completed = DetectionCompleted(
            camera_id=entry.camera_id,
            file_entry_id=entry_id,
            path=entry.path,
            sha256=entry.sha256,
            media_kind=entry.media_kind,
            captured_at=entry.captured_at,
            observed_at=entry.observed_at,
            objects=tuple(objects),
            image_width=result.image_width,
            image_height=result.image_height,
            detector=result.detector,
            inference_ms=round(result.inference_ms, 2),
            frames=result.frames,
            completed_at=self._clock(),
            passes=result.passes,
            reference_entry_id=reference_id,
            zones_version=self._zones.version if zones else None,
            ignored=ignored,
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

"""Turning a ready file into its `file.observed` entry and publishing it once.

Registers the file's camera first (once), builds the entry (capture time from the name, EXIF or
mtime), adds the caller's headers, publishes it through the `Ledger` and calls the `on_observed`
hook for a new entry.

Each file published starts its trace: a root span `watch` whose W3C `traceparent` goes into the
entry's headers (unless the caller's headers name one), so every stage after it continues the
file's trace (see `streams.tracing`). A duplicate ends its trace there (outcome `skipped`) and
counts in `hsi_dedupe_hits_total`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from streams.clock import utc_now
from streams.envelope import HEADER_TRACEPARENT
from streams.names import StreamNames
from streams.schemas import CameraRegistered, FileObserved
from streams.tracing import (
    ATTR_CAMERA,
    ATTR_ENTRY_ID,
    ATTR_RESULT,
    ATTR_STREAM,
    FAILED,
    OK,
    SKIPPED,
    StageTelemetry,
    end_span,
    resolve,
    root_span,
    traceparent_of,
)
from streams.watch.candidates import Candidate, IgnoreReason
from streams.watch.capture import CaptureSource, capture_time
from streams.watch.ledger import Ledger, Published
from streams.watch.outcomes import Outcome, OutcomeKind
from streams.watch.probe import Probe

logger = logging.getLogger("hsi.watch")

HeadersFactory = Callable[[FileObserved], Mapping[str, str]]
"""Extra entry headers for a file (the app adds `traceparent` here)."""

ObservedHook = Callable[[FileObserved, str], Awaitable[None] | None]
"""Called with each published entry and its id (sync or async)."""

Captured = tuple[datetime, CaptureSource]
"""A file's capture time and where it came from (`streams.watch.capture.capture_time`)."""


class Publisher:
    """Publishes ready files; counts the cameras it registered."""

    def __init__(
        self,
        ledger: Ledger,
        timezone: str,
        *,
        headers_factory: HeadersFactory | None = None,
        on_observed: ObservedHook | None = None,
        telemetry: StageTelemetry | None = None,
        names: StreamNames | None = None,
    ) -> None:
        self._ledger = ledger
        self._telemetry = telemetry
        self._names = names
        self._timezone = timezone
        self._headers_factory = headers_factory
        self._on_observed = on_observed
        self.cameras_registered = 0
        self._refused_folders: set[str] = set()

    async def publish(
        self,
        candidate: Candidate,
        probe: Probe,
        mtime: float,
        *,
        captured: Captured | None = None,
    ) -> Outcome:
        """Publish the file whose decodable content `probe` describes: observed or duplicate.

        `captured`: its capture time if already read (else read here, in a thread). Redis errors
        propagate (the caller retries the file).
        """
        owner = await self._ledger.folder_of(candidate.camera_id, candidate.camera_folder)
        if owner != candidate.camera_folder:
            return self._refuse_folder(candidate, owner)
        entry = await self._entry(candidate, probe, mtime, captured)
        await self._register(candidate)
        headers = dict(self._headers_factory(entry)) if self._headers_factory else {}
        published = await self._publish_traced(entry, headers)
        self._log(entry, published)
        if published.new:
            await self._notify(entry, published.entry_id)
        return Outcome(
            candidate.path,
            OutcomeKind.OBSERVED if published.new else OutcomeKind.DUPLICATE,
            camera_id=candidate.camera_id,
            sha256=probe.sha256,
            entry_id=published.entry_id,
        )

    def _refuse_folder(self, candidate: Candidate, owner: str) -> Outcome:
        """A second folder for one camera id: its files stay on disk, unpublished, and the
        operator is told once per folder which folder to rename."""
        if candidate.camera_folder not in self._refused_folders:
            self._refused_folders.add(candidate.camera_folder)
            logger.warning(
                "watch.camera_id_taken",
                extra={
                    "camera": candidate.camera_id,
                    "folder": candidate.camera_folder,
                    "owner": owner,
                    "detail": f"folders {owner!r} and {candidate.camera_folder!r} both map to "
                    f"camera id {candidate.camera_id!r}; the files of {candidate.camera_folder!r}"
                    " are not taken: rename it (or move its files into the other folder)",
                },
            )
        return Outcome(
            candidate.path,
            OutcomeKind.IGNORED,
            reason=IgnoreReason.CAMERA_ID_TAKEN.value,
            camera_id=candidate.camera_id,
        )

    async def _entry(
        self, candidate: Candidate, probe: Probe, mtime: float, captured: Captured | None
    ) -> FileObserved:
        """The file's `file.observed` entry, observed now (its capture time read when needed)."""
        if captured is None:
            captured = await asyncio.to_thread(
                capture_time,
                candidate.path,
                candidate.path.name,
                self._timezone,
                mtime,
                read_exif=candidate.media_kind == "image",
            )
        captured_at, source = captured
        return FileObserved(
            camera_id=candidate.camera_id,
            path=candidate.relative,
            sha256=probe.sha256,
            size=probe.size,
            mime=probe.mime or candidate.mime,
            media_kind=candidate.media_kind,
            captured_at=captured_at,
            capture_source=source,
            observed_at=utc_now(),
        )

    async def _publish_traced(self, entry: FileObserved, headers: dict[str, str]) -> Published:
        """Publish the entry once, in the root span `watch` of the file's trace (its
        `traceparent` added to `headers` unless they name one), with the stage metrics."""
        camera = entry.camera_id
        telemetry = resolve(self._telemetry)
        started = time.perf_counter()
        span = root_span(
            telemetry,
            "watch",
            attributes={
                ATTR_CAMERA: camera,
                ATTR_STREAM: self._names.files(camera) if self._names else "",
                "hsi.path": entry.path,
                "hsi.media_kind": entry.media_kind,
                "hsi.size": entry.size,
            },
        )
        traceparent = traceparent_of(span)
        if traceparent is not None and HEADER_TRACEPARENT not in headers:
            headers[HEADER_TRACEPARENT] = traceparent
        try:
            published = await self._ledger.publish_once(entry, headers or None)
        except BaseException as exc:
            self._record(telemetry, camera, started, FAILED)
            end_span(span, FAILED, error=exc)
            raise
        # A duplicate wrote nothing: the id is the first upload's.
        span.set_attribute(
            ATTR_ENTRY_ID if published.new else "hsi.duplicate_of", published.entry_id
        )
        span.set_attribute(ATTR_RESULT, "observed" if published.new else "duplicate")
        self._record(telemetry, camera, started, OK if published.new else SKIPPED)
        if not published.new:
            telemetry.instruments.dedupe_hits.add(1, {"camera": camera})
        end_span(span, OK if published.new else SKIPPED)
        return published

    @staticmethod
    def _log(entry: FileObserved, published: Published) -> None:
        fields = {
            "camera": entry.camera_id,
            "path": entry.path,
            "sha256": entry.sha256,
            "entry_id": published.entry_id,
        }
        if not published.new:
            logger.info("file.duplicate", extra=fields)
            return
        logger.info(
            "file.observed",
            extra={
                **fields,
                "size": entry.size,
                "media_kind": entry.media_kind,
                "capture_source": entry.capture_source,
            },
        )

    @staticmethod
    def _record(telemetry: StageTelemetry, camera: str, started: float, outcome: str) -> None:
        labels = {"stage": "watch", "camera": camera, "outcome": outcome}
        telemetry.instruments.stage_duration.record(time.perf_counter() - started, labels)
        telemetry.instruments.entries_processed.add(1, labels)

    async def _register(self, candidate: Candidate) -> None:
        entry = CameraRegistered(
            camera_id=candidate.camera_id,
            name=candidate.camera_folder,
            folder=candidate.camera_folder,
            registered_at=utc_now(),
        )
        entry_id = await self._ledger.register_camera(entry)
        if entry_id is not None:
            self.cameras_registered += 1
            logger.info(
                "camera.registered",
                extra={
                    "camera": candidate.camera_id,
                    "folder": candidate.camera_folder,
                    "entry_id": entry_id,
                },
            )

    async def _notify(self, entry: FileObserved, entry_id: str) -> None:
        if self._on_observed is None:
            return
        try:
            result = self._on_observed(entry, entry_id)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.exception(
                "watch.hook_failed",
                extra={"camera": entry.camera_id, "entry_id": entry_id, "error": repr(exc)},
            )

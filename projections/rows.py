"""Entry → rows: which columns of which projection rows one entry sets, and how they merge.

A pure function of (stream kind, camera, entry id, entry): no I/O, no clock. Every row key is
derived from the entry (camera id, entry ids, batch id), so the live projection and a rebuild
produce the same rows.

Entries of different streams of one camera may be applied in any order (a detection before its
file, an analysis before its batch), so each entry writes only its own columns and says how each
merges into a row that already exists (`Merge`). The merges of different streams commute:

- `SET`: the entry's value wins (columns that only one stream writes; within one stream entries
  are applied in stream order, so the last fact wins);
- `FILL`: the existing value wins, the entry's fills a gap (a detection carries a copy of its
  file's path, hash and times; the file's own entry SETs them);
- `KEEP`: the value is written only when the row is created (a placeholder camera name);
- `ADD`, `LEAST`, `GREATEST`: counters and first/last times.

The camera row is touched by three streams (the shared cameras stream, files and batches). Any of
them may come first, so each creates the row when it is missing (a placeholder named after the
camera id, which `camera.registered` then names). `first_seen`/`last_seen` are the least/greatest
time of every entry that touched the camera: its registration, its files' `observed_at`, its
batches' `closed_at`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson

from projections.errors import UnexpectedEntryError
from projections.tables import BY_NAME, key_of, sql_type
from streams.envelope import decode
from streams.ids import alert_id, detection_id, event_id, media_file_id
from streams.names import StreamKind
from streams.schemas import (
    ENTRY_TYPES,
    AlertFailed,
    AlertSent,
    AlertSkipped,
    AnalysisCompleted,
    AnalysisFailed,
    BatchClosed,
    CameraRegistered,
    DetectionCompleted,
    DetectionFailed,
    Entry,
    EntryDead,
    FileObserved,
    ReanalysisAdopted,
    ReanalysisEnded,
    ReanalysisFailed,
    ReanalysisResult,
    ReanalysisStarted,
)

# The source kind of the shared `cameras` stream (the per-camera streams use `StreamKind`).
CAMERAS_SOURCE: Final = "cameras"

# Which entry types each source carries; anything else on that stream cannot be projected.
EXPECTED: Final[Mapping[str, frozenset[str]]] = {
    CAMERAS_SOURCE: frozenset({"camera.registered"}),
    StreamKind.FILES: frozenset({"file.observed"}),
    StreamKind.DETECTIONS: frozenset({"detection.completed", "detection.failed"}),
    StreamKind.BATCHES: frozenset({"batch.closed"}),
    StreamKind.ANALYSES: frozenset({"analysis.completed", "analysis.failed"}),
    StreamKind.DEAD: frozenset({"entry.dead"}),
    StreamKind.ALERTS: frozenset({"alert.sent", "alert.failed", "alert.skipped"}),
    StreamKind.REANALYSES: frozenset(
        {
            "reanalysis.started",
            "reanalysis.result",
            "reanalysis.failed",
            "reanalysis.ended",
            "reanalysis.adopted",
        }
    ),
}


# The tables each source's entries write. A rebuild's bulk load (`projections.bulk`) reads a
# camera's streams in `PROJECTED` order and writes the camera's rows of a table once no later
# stream of the camera writes that table.
WRITES: Final[Mapping[str, frozenset[str]]] = {
    CAMERAS_SOURCE: frozenset({"cameras"}),
    StreamKind.FILES: frozenset({"media_files", "cameras"}),
    StreamKind.DETECTIONS: frozenset({"media_files", "detections"}),
    StreamKind.BATCHES: frozenset({"events", "event_detections", "cameras"}),
    StreamKind.ANALYSES: frozenset({"events", "analysis_history"}),
    StreamKind.DEAD: frozenset({"dead_letters"}),
    StreamKind.ALERTS: frozenset({"alerts"}),
    StreamKind.REANALYSES: frozenset({"reanalysis_runs", "reanalysis_results"}),
}

# Tables whose every row is written by one entry only (its key is derived from the entry's id):
# a row is final as soon as its entry is mapped.
ENTRY_ROWS: Final = frozenset({"detections", "analysis_history", "dead_letters", "alerts"})

# Tables whose rows gather entries of several cameras' streams: a camera's `cameras` row is also
# written by the shared cameras stream, a re-analysis run by each camera it ran on.
SHARED_ROWS: Final = frozenset({"cameras", "reanalysis_runs"})


class Merge(StrEnum):
    """How a column of an upsert merges into a row that already exists."""

    SET = "set"  # the new value
    FILL = "fill"  # the old value when it is not NULL, else the new one
    KEEP = "keep"  # the old value (the new one is used only when the row is created)
    ADD = "add"  # old + new
    LEAST = "least"  # the smaller (NULLs ignored)
    GREATEST = "greatest"  # the larger (NULLs ignored)


@dataclass(frozen=True)
class RowOp:
    """An upsert of one row: the columns `values` gives, keyed on the table's conflict key.

    Key columns are part of `values`; a non-key column missing from `merge` merges with `SET`.
    Columns not in `values` keep their current value, or their default when the row is new.
    Its shape (table, columns) is checked against the table metadata by `check_shape` when it is
    planned: once per shape, not once per row.
    """

    table: str
    values: Mapping[str, Any]
    merge: Mapping[str, Merge] = field(default_factory=dict)

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(self.values[column] for column in key_of(BY_NAME[self.table]))

    def merge_of(self, column: str) -> Merge:
        return self.merge.get(column, Merge.SET)


@functools.lru_cache(maxsize=1024)
def check_shape(table: str, columns: tuple[str, ...]) -> None:
    """Refuse an upsert of an unknown table, of a column the table lacks (`KeyError`) or without
    its key columns: a typo fails before PostgreSQL sees it. Cached: the mapping makes a handful
    of shapes."""
    described = BY_NAME.get(table)
    if described is None:
        raise ValueError(f"{table!r} is not a projection table")
    for column in columns:
        sql_type(described, column)  # raises KeyError for a column the table lacks
    missing = [k for k in key_of(described) if k not in columns]
    if missing:
        raise ValueError(f"{table} upsert lacks key column(s) {', '.join(missing)}")


def original_type(original: str | None) -> str | None:
    """The entry type inside a dead letter's base64 `__data__`, when it names a known type."""
    if original is None:
        return None
    try:
        body, _ = decode(base64.b64decode(original, validate=True))
        raw = orjson.loads(body)
    except (binascii.Error, ValueError):
        return None
    except Exception:  # FastStream's parser raises various errors on foreign bytes
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) and kind in ENTRY_TYPES else None


# --- the mapping --------------------------------------------------------------------------------

_CAMERA_PLACEHOLDER: Final = {"name": Merge.KEEP, "folder": Merge.KEEP}
_SEEN: Final = {"first_seen": Merge.LEAST, "last_seen": Merge.GREATEST}
# Columns a detection entry copies from its file: the file's own entry wins.
_FROM_FILE: Final = {
    c: Merge.FILL for c in ("path", "sha256", "media_kind", "captured_at", "observed_at")
}


def rows_for(kind: str, camera: str, entry_id: str, entry: Entry) -> list[RowOp]:
    """The upserts one entry makes, in order.

    `kind` is the stream's `StreamKind` (or `CAMERAS_SOURCE` for the shared cameras stream),
    `camera` the camera of the stream (for the cameras stream, the entry's camera), `entry_id`
    the entry's id on that stream. An entry of a type its stream does not carry raises
    `UnexpectedEntryError`.
    """
    expected = EXPECTED.get(kind)
    if expected is None:
        raise UnexpectedEntryError(f"{kind!r} is not a projected stream kind")
    if entry.type not in expected:
        raise UnexpectedEntryError(
            f"a {entry.type} entry on a {kind} stream cannot be projected; "
            f"that stream carries {', '.join(sorted(expected))}"
        )
    match entry:
        case CameraRegistered():
            return [_camera_registered(entry)]
        case FileObserved():
            return _file_observed(camera, entry_id, entry)
        case DetectionCompleted():
            return _detection_completed(camera, entry_id, entry)
        case DetectionFailed():
            return [_detection_failed(camera, entry)]
        case BatchClosed():
            return _batch_closed(camera, entry_id, entry)
        case AnalysisCompleted() | AnalysisFailed():
            return [_analysis(camera, entry_id, entry), _history(camera, entry_id, entry)]
        case ReanalysisStarted():
            return [_run_started(entry)]
        case ReanalysisResult() | ReanalysisFailed():
            return _run_result(camera, entry_id, entry)
        case ReanalysisEnded():
            return [_run_ended(entry)]
        case ReanalysisAdopted():
            return [_run_adopted(entry)]
        case EntryDead():
            return [_entry_dead(camera, entry_id, entry)]
        case AlertSent() | AlertFailed() | AlertSkipped():
            return [_alert(camera, entry_id, entry)]
    raise UnexpectedEntryError(f"no projection for entry type {entry.type}")  # pragma: no cover


def _camera_registered(entry: CameraRegistered) -> RowOp:
    return RowOp(
        "cameras",
        {
            "id": entry.camera_id,
            "name": entry.name,
            "folder": entry.folder,
            "first_seen": entry.registered_at,
            "last_seen": entry.registered_at,
        },
        _SEEN,
    )


def _file_observed(camera: str, entry_id: str, entry: FileObserved) -> list[RowOp]:
    media = RowOp(
        "media_files",
        {
            "id": media_file_id(camera, entry_id),
            "camera_id": camera,
            "entry_id": entry_id,
            "path": entry.path,
            "sha256": entry.sha256,
            "size": entry.size,
            "mime": entry.mime,
            "media_kind": entry.media_kind,
            "captured_at": entry.captured_at,
            "capture_source": entry.capture_source,
            "observed_at": entry.observed_at,
        },
    )
    cam = RowOp(
        "cameras",
        {
            "id": camera,
            "name": camera,
            "folder": camera,
            "first_seen": entry.observed_at,
            "last_seen": entry.observed_at,
            "file_count": 1,
        },
        {**_CAMERA_PLACEHOLDER, **_SEEN, "file_count": Merge.ADD},
    )
    return [media, cam]


def _media_detection(
    camera: str,
    file_entry_id: str,
    *,
    file_id: uuid.UUID,
    copied: Mapping[str, Any],
    status: str,
    error: str | None,
    detector: str,
    image_size: tuple[int, int] | None,
    object_count: int | None,
    detected_at: Any,
) -> RowOp:
    """The detection columns of a media file (the same columns for completed and failed, so a
    later detection entry of the same file replaces every one of them)."""
    return RowOp(
        "media_files",
        {
            "id": file_id,
            "camera_id": camera,
            "entry_id": file_entry_id,
            **copied,
            "detection_status": status,
            "detection_error": error,
            "detector": detector,
            "image_width": None if image_size is None else image_size[0],
            "image_height": None if image_size is None else image_size[1],
            "object_count": object_count,
            "detected_at": detected_at,
        },
        _FROM_FILE,
    )


def _detection_completed(camera: str, entry_id: str, entry: DetectionCompleted) -> list[RowOp]:
    file_id = media_file_id(camera, entry.file_entry_id)
    media = _media_detection(
        camera,
        entry.file_entry_id,
        file_id=file_id,
        copied={
            "path": entry.path,
            "sha256": entry.sha256,
            "media_kind": entry.media_kind,
            "captured_at": entry.captured_at,
            "observed_at": entry.observed_at,
        },
        status="completed",
        error=None,
        detector=entry.detector,
        image_size=(entry.image_width, entry.image_height),
        object_count=len(entry.objects),
        detected_at=entry.completed_at,
    )
    objects = [
        RowOp(
            "detections",
            {
                "id": detection_id(camera, entry_id, index),
                "camera_id": camera,
                "detection_entry_id": entry_id,
                "object_index": index,
                "file_id": file_id,
                "file_entry_id": entry.file_entry_id,
                "path": entry.path,
                "label": obj.label,
                "confidence": obj.confidence,
                "bbox_x": obj.bbox.x,
                "bbox_y": obj.bbox.y,
                "bbox_width": obj.bbox.width,
                "bbox_height": obj.bbox.height,
                "zones": list(obj.zones),
                "frame_seconds": obj.frame_seconds,
                "image_width": entry.image_width,
                "image_height": entry.image_height,
                "detector": entry.detector,
                "captured_at": entry.captured_at,
            },
        )
        for index, obj in enumerate(entry.objects)
    ]
    return [media, *objects]


def _detection_failed(camera: str, entry: DetectionFailed) -> RowOp:
    return _media_detection(
        camera,
        entry.file_entry_id,
        file_id=media_file_id(camera, entry.file_entry_id),
        copied={
            "path": entry.path,
            "sha256": entry.sha256,
            "media_kind": None,
            "captured_at": entry.captured_at,
            "observed_at": entry.observed_at,
        },
        status="failed",
        error=entry.error,
        detector=entry.detector,
        image_size=None,
        object_count=None,
        detected_at=entry.failed_at,
    )


def _batch_closed(camera: str, entry_id: str, entry: BatchClosed) -> list[RowOp]:
    event = event_id(camera, entry.batch_id)
    rows = [
        RowOp(
            "events",
            {
                "id": event,
                "camera_id": camera,
                "batch_entry_id": entry_id,
                "window_start": entry.window_start,
                "window_end": entry.window_end,
                "close_reason": entry.close_reason,
                "detection_count": entry.detection_count,
                "object_types": list(entry.object_types),
                "zones": sorted({z for d in entry.detections for o in d.objects for z in o.zones}),
                "max_confidence": entry.max_confidence,
                "fast_path": entry.fast_path,
                "closed_at": entry.closed_at,
            },
        )
    ]
    rows.extend(
        RowOp(
            "event_detections",
            {
                "event_id": event,
                "detection_entry_id": detection.entry_id,
                "file_entry_id": detection.file_entry_id,
                "camera_id": camera,
                "position": position,
            },
        )
        for position, detection in enumerate(entry.detections)
    )
    rows.append(
        RowOp(
            "cameras",
            {
                "id": camera,
                "name": camera,
                "folder": camera,
                "first_seen": entry.closed_at,
                "last_seen": entry.closed_at,
                "event_count": 1,
                "last_event_at": entry.window_start,
            },
            {
                **_CAMERA_PLACEHOLDER,
                **_SEEN,
                "event_count": Merge.ADD,
                "last_event_at": Merge.GREATEST,
            },
        )
    )
    return rows


def _analysis(camera: str, entry_id: str, entry: AnalysisCompleted | AnalysisFailed) -> RowOp:
    """The analysis columns of an event (all of them, so a later analysis replaces an earlier)."""
    values: dict[str, Any] = {
        "id": event_id(camera, entry.batch_id),
        "camera_id": camera,
        "analysis_entry_id": entry_id,
        "analyzer": entry.analyzer,
    }
    if isinstance(entry, AnalysisCompleted):
        values.update(
            analysis_status="completed",
            risk_score=entry.risk_score,
            risk_level=entry.risk_level,
            summary=entry.summary,
            reasoning=entry.reasoning,
            model=entry.model,
            prompt_hash=entry.prompt_hash,
            analysis_latency_ms=entry.latency_ms,
            analysis_error=None,
            analyzed_at=entry.analyzed_at,
        )
    else:
        values.update(
            analysis_status="failed",
            risk_score=None,
            risk_level=None,
            summary=None,
            reasoning=None,
            model=None,
            prompt_hash=None,
            analysis_latency_ms=None,
            analysis_error=entry.error,
            analyzed_at=entry.failed_at,
        )
    return RowOp("events", values)


def _history(camera: str, entry_id: str, entry: AnalysisCompleted | AnalysisFailed) -> RowOp:
    """One judgement of the event, kept after a later one replaces it on the event."""
    completed = isinstance(entry, AnalysisCompleted)
    return RowOp(
        "analysis_history",
        {
            "camera_id": camera,
            "entry_id": entry_id,
            "event_id": event_id(camera, entry.batch_id),
            "status": "completed" if completed else "failed",
            "risk_score": entry.risk_score if isinstance(entry, AnalysisCompleted) else None,
            "risk_level": entry.risk_level if isinstance(entry, AnalysisCompleted) else None,
            "summary": entry.summary if isinstance(entry, AnalysisCompleted) else entry.error,
            "analyzer": entry.analyzer,
            "model": entry.model if isinstance(entry, AnalysisCompleted) else None,
            "prompt_hash": entry.prompt_hash if isinstance(entry, AnalysisCompleted) else None,
            "supersedes": entry.supersedes if isinstance(entry, AnalysisCompleted) else None,
            "run_id": entry.run_id if isinstance(entry, AnalysisCompleted) else None,
            "analyzed_at": entry.analyzed_at
            if isinstance(entry, AnalysisCompleted)
            else entry.failed_at,
        },
    )


# A run's row is summed over its cameras' entries, in any order: descriptors FILL (every camera
# writes the same), times LEAST/GREATEST, counts ADD.
_RUN_DESCRIPTORS: Final = {
    c: Merge.FILL for c in ("analyzer", "model", "config_hash", "selection", "max_tokens")
}


def _run_started(entry: ReanalysisStarted) -> RowOp:
    return RowOp(
        "reanalysis_runs",
        {
            "id": entry.run_id,
            "analyzer": entry.analyzer,
            "model": entry.model,
            "config_hash": entry.config_hash,
            "selection": entry.selection,
            "max_tokens": entry.max_tokens,
            "started_at": entry.started_at,
            "cameras": 1,
        },
        {**_RUN_DESCRIPTORS, "started_at": Merge.LEAST, "cameras": Merge.ADD},
    )


def _run_result(
    camera: str, entry_id: str, entry: ReanalysisResult | ReanalysisFailed
) -> list[RowOp]:
    completed = isinstance(entry, ReanalysisResult)
    prompt = (entry.prompt_tokens or 0) if isinstance(entry, ReanalysisResult) else 0
    answer = (entry.completion_tokens or 0) if isinstance(entry, ReanalysisResult) else 0
    # whole microseconds: sums of floats would differ with the order cameras are applied in
    latency = round(entry.latency_ms * 1000) if isinstance(entry, ReanalysisResult) else 0
    result: dict[str, Any] = {
        "run_id": entry.run_id,
        "event_id": event_id(camera, entry.batch_id),
        "camera_id": camera,
        "entry_id": entry_id,
        "batch_entry_id": entry.batch_entry_id,
        "status": "completed" if completed else "failed",
        "current_entry_id": entry.current_entry_id,
    }
    if isinstance(entry, ReanalysisResult):
        result.update(
            current_score=entry.current_score,
            current_level=entry.current_level,
            risk_score=entry.risk_score,
            risk_level=entry.risk_level,
            summary=entry.summary,
            reasoning=entry.reasoning,
            error=None,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            latency_ms=entry.latency_ms,
            analyzed_at=entry.analyzed_at,
        )
    else:
        result.update(error=entry.error, analyzed_at=entry.failed_at)
    run = RowOp(
        "reanalysis_runs",
        {
            "id": entry.run_id,
            "analyzed": 1 if completed else 0,
            "failed": 0 if completed else 1,
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "latency_us": latency,
        },
        dict.fromkeys(
            ("analyzed", "failed", "prompt_tokens", "completion_tokens", "latency_us"), Merge.ADD
        ),
    )
    return [RowOp("reanalysis_results", result), run]


_END_COLUMNS: Final = {
    "completed": "cameras_completed",
    "cancelled": "cameras_cancelled",
    "budget": "cameras_over_budget",
}


def _run_ended(entry: ReanalysisEnded) -> RowOp:
    column = _END_COLUMNS[entry.reason]
    return RowOp(
        "reanalysis_runs",
        {"id": entry.run_id, column: 1, "ended_at": entry.ended_at},
        {column: Merge.ADD, "ended_at": Merge.GREATEST},
    )


def _run_adopted(entry: ReanalysisAdopted) -> RowOp:
    return RowOp(
        "reanalysis_runs",
        {"id": entry.run_id, "adopted": entry.analyses, "adopted_at": entry.adopted_at},
        {"adopted": Merge.ADD, "adopted_at": Merge.GREATEST},
    )


def _entry_dead(camera: str, entry_id: str, entry: EntryDead) -> RowOp:
    return RowOp(
        "dead_letters",
        {
            "camera_id": camera,
            "dead_entry_id": entry_id,
            "source_stream": entry.source_stream,
            "entry_id": entry.entry_id,
            "group_name": entry.group,
            "deliveries": entry.deliveries,
            "last_error": entry.last_error,
            "original_type": original_type(entry.original),
            "dead_at": entry.dead_at,
        },
    )


def _alert(camera: str, entry_id: str, entry: AlertSent | AlertFailed | AlertSkipped) -> RowOp:
    """One row per delivery outcome: sent, failed, or skipped (the event was too old, attempt
    0); `recorded_at` is when the outcome was known."""
    outcome: dict[str, Any]
    match entry:
        case AlertSent():
            outcome = {"status": "sent", "reason": None, "attempt": entry.attempt, "error": None}
            outcome.update(delivered_at=entry.delivered_at, recorded_at=entry.delivered_at)
        case AlertFailed():
            outcome = {"status": "failed", "reason": entry.reason, "attempt": entry.attempt}
            outcome.update(error=entry.error, delivered_at=None, recorded_at=entry.failed_at)
        case AlertSkipped():
            outcome = {"status": "skipped", "reason": entry.reason, "attempt": 0}
            outcome.update(
                error=f"the event was {entry.age_seconds:.0f} s old",
                delivered_at=None,
                recorded_at=entry.skipped_at,
            )
    return RowOp(
        "alerts",
        {
            "id": alert_id(camera, entry_id),
            "camera_id": camera,
            "entry_id": entry_id,
            "event_id": event_id(camera, entry.event_id),
            "analysis_entry_id": entry.analysis_entry_id,
            "rule": entry.rule,
            "channel": entry.channel,
            "idempotency_key": entry.idempotency_key,
            **outcome,
        },
    )

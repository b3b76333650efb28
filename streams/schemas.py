"""The facts: one pydantic model per entry type, each with `type` and `schema_version`.

Entries are immutable; a correction is a new entry. A reader refuses an entry whose
`schema_version` is newer than it knows (`UnsupportedSchemaError`) instead of half-reading it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streams.alerts.kinds import AlertChannel


class EntryError(ValueError):
    """An entry cannot be read."""


class UnsupportedSchemaError(EntryError):
    """The entry was written by a newer HSI than this one."""


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1


class CameraRegistered(_Entry):
    type: Literal["camera.registered"] = "camera.registered"
    camera_id: str
    name: str  # the folder name as the camera wrote it
    folder: str  # path of the folder relative to the camera root
    registered_at: datetime


class FileObserved(_Entry):
    type: Literal["file.observed"] = "file.observed"
    camera_id: str
    path: str  # relative to the camera root, e.g. "Front Door/snap/MDAlarm_20260101-120000.jpg"
    sha256: str
    size: int
    mime: str
    media_kind: Literal["image", "video"]
    captured_at: datetime
    capture_source: Literal["filename", "exif", "mtime"]
    observed_at: datetime


class Box(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    x: float
    y: float
    width: float
    height: float


class DetectedObject(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    confidence: float
    bbox: Box
    zones: tuple[str, ...] = ()  # the tagging zones its reference point is in (`streams.zones`)
    # A video's object: the time of the sampled frame it was seen in, in seconds from the
    # video's first frame; None for an image, and in entries written before it was recorded.
    frame_seconds: float | None = None


class DetectionCompleted(_Entry):
    type: Literal["detection.completed"] = "detection.completed"
    camera_id: str
    file_entry_id: str
    path: str
    sha256: str
    media_kind: Literal["image", "video"]
    captured_at: datetime
    observed_at: datetime
    objects: tuple[DetectedObject, ...]
    image_width: int
    image_height: int
    detector: str
    inference_ms: float
    frames: int = 1
    completed_at: datetime
    passes: int = 1  # model runs: the full frame, and each tile or motion region
    reference_entry_id: str | None = None  # the camera's previous file, compared for motion
    zones_version: str | None = None  # the zones file that tagged `objects` (None: no file)
    ignored: int = 0  # objects dropped because they stood in an ignore zone


class DetectionFailed(_Entry):
    type: Literal["detection.failed"] = "detection.failed"
    camera_id: str
    file_entry_id: str
    path: str
    sha256: str
    captured_at: datetime
    observed_at: datetime
    reason: Literal["undecodable"] = "undecodable"
    error: str
    detector: str
    failed_at: datetime


class BatchDetection(BaseModel):
    """One detections entry as carried inside a batch (so analysis needs no other read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_id: str
    file_entry_id: str
    path: str
    captured_at: datetime
    objects: tuple[DetectedObject, ...]


CloseReason = Literal["window", "idle", "max_size", "fast_path"]


class BatchClosed(_Entry):
    type: Literal["batch.closed"] = "batch.closed"
    camera_id: str
    batch_id: str
    detections: tuple[BatchDetection, ...]
    window_start: datetime
    window_end: datetime
    close_reason: CloseReason
    detection_count: int  # objects in the batch
    object_types: tuple[str, ...]
    max_confidence: float
    fast_path: bool
    closed_at: datetime
    # The least time between one of its pictures being taken and HSI seeing the file: seconds for
    # a live event, hours for an outage's backlog (`streams.alerts` calls it late). None: before.
    arrival_delay_seconds: float | None = None


class AnalysisCompleted(_Entry):
    type: Literal["analysis.completed"] = "analysis.completed"
    camera_id: str
    batch_id: str
    batch_entry_id: str
    risk_score: int = Field(ge=0, le=100)
    risk_level: Literal["low", "medium", "high", "critical"]
    summary: str
    reasoning: str
    analyzer: str
    model: str | None = None
    prompt_hash: str | None = None
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    analyzed_at: datetime
    # Written by `hsi reanalyze adopt`: the analysis entry this one replaces, the re-analysis run
    # it comes from, and whether it may alert (adoption sends no alerts for the past unless asked).
    supersedes: str | None = None
    run_id: str | None = None
    alert: bool = True


# The fields of a judgement, the same on `analysis.completed` and `reanalysis.result` (an adopted
# result becomes an analysis with these copied over).
JUDGEMENT_FIELDS: tuple[str, ...] = (
    "risk_score",
    "risk_level",
    "summary",
    "reasoning",
    "analyzer",
    "model",
    "prompt_hash",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
)


class AnalysisFailed(_Entry):
    type: Literal["analysis.failed"] = "analysis.failed"
    camera_id: str
    batch_id: str
    batch_entry_id: str
    analyzer: str
    error: str
    failed_at: datetime


class EntryDead(_Entry):
    type: Literal["entry.dead"] = "entry.dead"
    camera_id: str
    source_stream: str
    entry_id: str
    group: str
    deliveries: int
    last_error: str
    original: str | None  # the original `__data__` field, base64; None when it was deleted
    dead_at: datetime


class AlertSent(_Entry):
    """A channel confirmed the alert of one event (written once per event and channel)."""

    type: Literal["alert.sent"] = "alert.sent"
    camera_id: str
    event_id: str  # the batch id, which is the event's id in the API
    analysis_entry_id: str
    rule: str
    channel: AlertChannel
    attempt: int = Field(ge=1)  # the delivery attempt of this event on this channel
    idempotency_key: str  # `{camera}:{event}:{channel}`, also sent to the channel
    delivered_at: datetime


class AlertFailed(_Entry):
    """One delivery attempt failed (`delivery_error`: retried until the analysis entry is a dead
    letter), or its outcome is unknown (`outcome_unknown`: a process stopped between sending and
    recording; never sent again, so that nothing is delivered twice)."""

    type: Literal["alert.failed"] = "alert.failed"
    camera_id: str
    event_id: str
    analysis_entry_id: str
    rule: str
    channel: AlertChannel
    attempt: int = Field(ge=1)
    idempotency_key: str
    reason: Literal["delivery_error", "outcome_unknown"] = "delivery_error"
    error: str
    failed_at: datetime


class AlertSkipped(_Entry):
    """An alert a channel would have had, not sent: the event was older than the notify stage's
    age bound when it got there (`too_old`: a backlog, a replay, or data Redis lost and the
    watcher saw again). Written once per event and channel, instead of sending."""

    type: Literal["alert.skipped"] = "alert.skipped"
    camera_id: str
    event_id: str
    analysis_entry_id: str
    rule: str
    channel: AlertChannel
    idempotency_key: str
    reason: Literal["too_old"] = "too_old"
    age_seconds: float  # now minus when the event's newest picture was taken
    skipped_at: datetime


Level = Literal["low", "medium", "high", "critical"]


class ReanalysisStarted(_Entry):
    """A re-analysis run begins on this camera: which batches it covers, with which analyzer."""

    type: Literal["reanalysis.started"] = "reanalysis.started"
    camera_id: str
    run_id: str
    analyzer: str  # the candidate: "rules" or "llm"
    model: str | None = None
    config_hash: str  # sha256 of the candidate's configuration (weights, or URL, model, prompt)
    selection: str  # the selection in words, for people
    # the selection of batches (`streams.reanalysis.selection.Selection`, cameras aside)
    since: datetime | None = None
    until: datetime | None = None
    levels: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    until_entry_id: str  # the camera's last batch entry when the run began: its end
    max_tokens: int | None = None  # the run's LLM token budget (None: unbounded)
    started_at: datetime


class ReanalysisResult(_Entry):
    """The candidate's judgement of one batch, beside the judgement current when it ran."""

    type: Literal["reanalysis.result"] = "reanalysis.result"
    camera_id: str
    run_id: str
    batch_id: str
    batch_entry_id: str
    current_entry_id: str | None = None  # the analysis it is compared with (None: none yet)
    current_score: int | None = Field(default=None, ge=0, le=100)
    current_level: Level | None = None
    risk_score: int = Field(ge=0, le=100)
    risk_level: Level
    summary: str
    reasoning: str
    analyzer: str
    model: str | None = None
    prompt_hash: str | None = None
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    analyzed_at: datetime


class ReanalysisFailed(_Entry):
    """The candidate gave no judgement of one batch (the current analysis is untouched)."""

    type: Literal["reanalysis.failed"] = "reanalysis.failed"
    camera_id: str
    run_id: str
    batch_id: str
    batch_entry_id: str
    current_entry_id: str | None = None
    error: str
    failed_at: datetime


class ReanalysisEnded(_Entry):
    """The run is over on this camera: every batch seen, cancelled, or out of token budget."""

    type: Literal["reanalysis.ended"] = "reanalysis.ended"
    camera_id: str
    run_id: str
    reason: Literal["completed", "cancelled", "budget"]
    ended_at: datetime


class ReanalysisAdopted(_Entry):
    """The run's judgements became the camera's current analyses (`analyses` of them)."""

    type: Literal["reanalysis.adopted"] = "reanalysis.adopted"
    camera_id: str
    run_id: str
    analyses: int = Field(ge=0)
    alerts: bool = False
    adopted_at: datetime


Entry = Annotated[
    CameraRegistered
    | FileObserved
    | DetectionCompleted
    | DetectionFailed
    | BatchClosed
    | AnalysisCompleted
    | AnalysisFailed
    | EntryDead
    | AlertSent
    | AlertFailed
    | AlertSkipped
    | ReanalysisStarted
    | ReanalysisResult
    | ReanalysisFailed
    | ReanalysisEnded
    | ReanalysisAdopted,
    Field(discriminator="type"),
]

ENTRY_TYPES: dict[str, type[_Entry]] = {
    model.model_fields["type"].default: model
    for model in (
        CameraRegistered,
        FileObserved,
        DetectionCompleted,
        DetectionFailed,
        BatchClosed,
        AnalysisCompleted,
        AnalysisFailed,
        EntryDead,
        AlertSent,
        AlertFailed,
        AlertSkipped,
        ReanalysisStarted,
        ReanalysisResult,
        ReanalysisFailed,
        ReanalysisEnded,
        ReanalysisAdopted,
    )
}

# The newest schema version of each type this code reads and writes.
SUPPORTED_VERSIONS: dict[str, int] = dict.fromkeys(ENTRY_TYPES, 1)

_ADAPTER: TypeAdapter[Entry] = TypeAdapter(Entry)


def dump_entry(entry: _Entry) -> bytes:
    """The JSON body of an entry."""
    return orjson.dumps(entry.model_dump(mode="json"))


def load_entry(body: bytes | str) -> Entry:
    """Parse and validate an entry body; refuse unknown types and newer schema versions."""
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EntryError(f"entry body is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise EntryError("entry body is not a JSON object")
    kind = raw.get("type")
    if kind not in ENTRY_TYPES:
        raise EntryError(f"unknown entry type {kind!r}; known: {', '.join(sorted(ENTRY_TYPES))}")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise EntryError(f"{kind}: schema_version {version!r} is not a positive integer")
    if version > SUPPORTED_VERSIONS[kind]:
        raise UnsupportedSchemaError(
            f"{kind} schema_version {version} is newer than this HSI reads "
            f"(up to {SUPPORTED_VERSIONS[kind]}); upgrade HSI before processing this stream"
        )
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise EntryError(
            f"{kind} entry is invalid: {exc.errors()[0]['msg']} "
            f"at {'.'.join(map(str, exc.errors()[0]['loc']))}"
        ) from exc

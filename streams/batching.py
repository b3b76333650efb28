"""Grouping one camera's detections into batches, as pure decisions.

The batching stage keeps at most one open batch per camera and asks this module what to do:
`decide` when a detection item arrives, `tick` when its timer fires and nothing arrived. Both
return values and never read a clock; the stage does all I/O.

Clock
-----
Batches run on **item time**: `DetectionItem.at`, when the file's picture was taken (epoch
seconds): its capture time (`item_time`: from the file name, EXIF or, failing those, the file's
modification time), unless that lies more than `clock_tolerance_seconds` after the file was
observed — a camera clock running fast — when the observation time is used instead. `started_at`
and `last_at` of a batch are item times, so an outage's backlog or a backfill of last week is
batched by when things happened, not by when HSI processed them, and an event's window is the
time its pictures show.

- `decide(open_batch, item, now, config)`: the item counts at `min(item.at, now)`, so an item
  stamped in the future cannot hold a batch open beyond what the timer sees; and at least at the
  open batch's `last_at`, because detectors work concurrently and items of one camera may arrive
  slightly out of order (an older item joins; it never stretches the batch into the past). `now`
  (the stage's wall clock) also becomes the batch's `arrived_at`.
- `tick(open_batch, now, config)`: the timer runs the **camera's clock**: the batch's `last_at`
  plus the wall time since its last item arrived (`now - arrived_at`). For live uploads that is the
  wall clock (less the few seconds an upload and its detection take); for a backlog whose
  pictures were taken hours ago it moves on only as time passes without items, so the timer does
  not close a backlog's batch between two of its files.

Rules
-----
With `t` the item's time as above and an open batch B:

1. B has expired at `t` if `t - B.started_at >= window_seconds` or `t - B.last_at >=
   idle_seconds`. It is closed first, with the reason whose deadline came first (`window` on a
   tie) — the reason the timer would have given had it fired in time.
2. An item without objects (thresholding happens upstream) joins no batch. It is still evidence
   that the camera's clock moved on, so it closes an expired B exactly like `tick(B, t)`;
   otherwise it changes nothing.
3. An item with objects joins B if B is still open, else it opens a new batch.
4. If one of the item's objects has a fast-path label at >= `fast_path_threshold` (and the fast
   path is enabled), the batch closes at once, including the item: reason `fast_path`.
5. Else, when the batch holds `max_detections` objects or more, it closes: reason `max_size`.
   Objects are counted, not items, because the count bounds the analyzer's input; an item with
   many objects may overshoot the maximum by its own size.

So one `decide` closes 0, 1 or 2 batches: an expired B, and the new batch when rule 4 or 5 hits
at once.

Batch identity
--------------
`batch_id` is a UUID derived from the camera and the entry id of the batch's first item
(`batch_id_for`), so the same items make the same batch, whichever consumer sees them, and the
stage can close a batch exactly once with the id as idempotency key. `Closed.closed_at` is also
derived from content (the expired deadline, or the last item's time), never from the wall clock.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from enum import StrEnum

# Fixed namespace for uuid5 batch ids; changing it changes every id (never do that).
_BATCH_NAMESPACE = uuid.UUID("0771f460-b29e-4b32-b995-738a5930235c")

ObjectHit = tuple[str, float]
"""One detected object of an item: (label, confidence 0–1)."""


class CloseReason(StrEnum):
    WINDOW = "window"
    IDLE = "idle"
    MAX_SIZE = "max_size"
    FAST_PATH = "fast_path"


@dataclass(frozen=True, slots=True)
class BatchConfig:
    window_seconds: float = 90.0
    idle_seconds: float = 30.0
    max_detections: int = 50
    fast_path_enabled: bool = True
    fast_path_threshold: float = 0.9
    fast_path_labels: frozenset[str] = frozenset({"person"})
    clock_tolerance_seconds: float = 300.0  # capture time may lie this far after observation

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds}")
        if not (math.isfinite(self.idle_seconds) and self.idle_seconds > 0):
            raise ValueError(f"idle_seconds must be > 0, got {self.idle_seconds}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")
        if not (math.isfinite(self.clock_tolerance_seconds) and self.clock_tolerance_seconds >= 0):
            raise ValueError(
                f"clock_tolerance_seconds must be >= 0, got {self.clock_tolerance_seconds}"
            )
        if not 0.0 <= self.fast_path_threshold <= 1.0:
            raise ValueError(
                f"fast_path_threshold must be between 0 and 1, got {self.fast_path_threshold}"
            )


@dataclass(frozen=True, slots=True)
class DetectionItem:
    """The detections of one file, as the batching stage sees them."""

    entry_id: str
    camera: str
    at: float  # observed time, epoch seconds (see "Clock" above)
    objects: tuple[ObjectHit, ...] = ()


@dataclass(frozen=True, slots=True)
class OpenBatch:
    """A camera's batch that is still collecting items. Immutable: every change is a new value."""

    batch_id: str
    camera: str
    started_at: float
    last_at: float
    entry_ids: tuple[str, ...]
    detection_count: int
    label_confidence: tuple[tuple[str, float], ...]  # highest confidence per label, by label
    arrived_at: float | None = None  # wall clock of the last item's arrival; None: `last_at`

    def camera_now(self, now: float) -> float:
        """The camera's clock at wall clock `now` (see "Clock" above)."""
        arrived = self.last_at if self.arrived_at is None else self.arrived_at
        return self.last_at + max(0.0, now - arrived)

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(label for label, _ in self.label_confidence)

    @property
    def max_confidence(self) -> float:
        """The highest confidence of any object in the batch."""
        return max((conf for _, conf in self.label_confidence), default=0.0)


@dataclass(frozen=True, slots=True)
class Closed:
    """A batch to close, why, and when on the batch clock (not the wall clock)."""

    batch: OpenBatch
    reason: CloseReason
    closed_at: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The camera's open batch after the item (or None), and the batches to close, in order."""

    open_batch: OpenBatch | None
    closed: tuple[Closed, ...] = ()


def batch_id_for(camera: str, first_entry_id: str) -> str:
    """The deterministic id of the batch of `camera` whose first item is `first_entry_id`."""
    return str(uuid.uuid5(_BATCH_NAMESPACE, f"{camera}\x1f{first_entry_id}"))


def item_time(captured: float, observed: float, config: BatchConfig) -> float:
    """When a file's picture was taken, for batching: its capture time, or its observation time
    when the capture time lies more than `clock_tolerance_seconds` after it (epoch seconds)."""
    if captured > observed + config.clock_tolerance_seconds:
        return observed
    return captured


def tick(open_batch: OpenBatch | None, now: float, config: BatchConfig) -> Closed | None:
    """Close `open_batch` if it has expired at wall clock `now` — on the camera's clock
    (`OpenBatch.camera_now`) — with reason `window` or `idle`, else None."""
    if open_batch is None:
        return None
    return _expired(open_batch, open_batch.camera_now(now), config)


def _expired(open_batch: OpenBatch, at: float, config: BatchConfig) -> Closed | None:
    """`open_batch` closed if it has expired at item time `at`, else None."""
    window_deadline = open_batch.started_at + config.window_seconds
    idle_deadline = open_batch.last_at + config.idle_seconds
    if window_deadline <= idle_deadline:
        deadline, reason = window_deadline, CloseReason.WINDOW
    else:
        deadline, reason = idle_deadline, CloseReason.IDLE
    if at < deadline:
        return None
    return Closed(batch=open_batch, reason=reason, closed_at=deadline)


def decide(
    open_batch: OpenBatch | None, item: DetectionItem, now: float, config: BatchConfig
) -> Decision:
    """What happens to the camera's batch when `item` arrives (see the module docstring)."""
    if open_batch is not None and open_batch.camera != item.camera:
        raise ValueError(
            f"item {item.entry_id!r} of camera {item.camera!r} offered to a batch of camera "
            f"{open_batch.camera!r}; keep one open batch per camera"
        )
    at = min(item.at, now)
    closed: list[Closed] = []
    batch = open_batch
    if batch is not None:
        at = max(at, batch.last_at)
        expired = _expired(batch, at, config)
        if expired is not None:
            closed.append(expired)
            batch = None
    if not item.objects:
        return Decision(open_batch=batch, closed=tuple(closed))

    batch = _start(item, at, now) if batch is None else _join(batch, item, at, now)
    if _is_fast_path(item, config):
        closed.append(Closed(batch=batch, reason=CloseReason.FAST_PATH, closed_at=at))
        batch = None
    elif batch.detection_count >= config.max_detections:
        closed.append(Closed(batch=batch, reason=CloseReason.MAX_SIZE, closed_at=at))
        batch = None
    return Decision(open_batch=batch, closed=tuple(closed))


def _start(item: DetectionItem, at: float, now: float) -> OpenBatch:
    return OpenBatch(
        batch_id=batch_id_for(item.camera, item.entry_id),
        camera=item.camera,
        started_at=at,
        last_at=at,
        entry_ids=(item.entry_id,),
        detection_count=len(item.objects),
        label_confidence=_merge_confidence((), item.objects),
        arrived_at=now,
    )


def _join(batch: OpenBatch, item: DetectionItem, at: float, now: float) -> OpenBatch:
    return OpenBatch(
        batch_id=batch.batch_id,
        camera=batch.camera,
        started_at=batch.started_at,
        last_at=max(batch.last_at, at),
        entry_ids=(*batch.entry_ids, item.entry_id),
        detection_count=batch.detection_count + len(item.objects),
        label_confidence=_merge_confidence(batch.label_confidence, item.objects),
        arrived_at=now,
    )


def _merge_confidence(
    known: tuple[tuple[str, float], ...], objects: tuple[ObjectHit, ...]
) -> tuple[tuple[str, float], ...]:
    best = dict(known)
    for label, confidence in objects:
        if confidence > best.get(label, -1.0):
            best[label] = confidence
    return tuple(sorted(best.items()))


def _is_fast_path(item: DetectionItem, config: BatchConfig) -> bool:
    if not config.fast_path_enabled:
        return False
    return any(
        label in config.fast_path_labels and confidence >= config.fast_path_threshold
        for label, confidence in item.objects
    )

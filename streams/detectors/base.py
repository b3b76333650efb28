"""What every detector backend returns, the errors it raises, and pure helpers on detections."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

MediaKind = Literal["image", "video"]
MEDIA_KINDS: tuple[str, ...] = ("image", "video")


class DetectorError(Exception):
    """Base error of `streams.detectors`; the message says what happened, why, and the fix."""


class UndecodableMediaError(DetectorError):
    """The file itself cannot be used (not an image/video, truncated, too large).

    Permanent for this file: the detection stage records `detection.failed` at once.
    """


class DetectorUnavailableError(DetectorError):
    """The detector cannot work right now (unreachable, timing out, 5xx, circuit open).

    Transient: the stage leaves the entry pending so that it is retried later.
    """


class DetectorProtocolError(DetectorError):
    """The detection service answered something that does not follow the contract.

    Treated by the stage like `DetectorUnavailableError`: retried later via reclaim.
    """


class DetectorConfigError(DetectorError, ValueError):
    """The detector settings cannot be used."""


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """Axis-aligned box in pixels of the original frame, origin at the top-left corner."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class DetectedObject:
    label: str
    confidence: float
    bbox: BoundingBox
    # A video's object: the time of the sampled frame it was seen in, in seconds from the
    # video's first frame (see `streams.detectors.frames`); None for an image.
    frame_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """Objects found in one image, or merged over the sampled frames of one video."""

    objects: tuple[DetectedObject, ...]
    image_width: int
    image_height: int
    inference_ms: float
    detector: str
    frames: int = 1
    passes: int = 1  # model runs over the frames: the full frame and each tile or region


class Detector(Protocol):
    """An object detector backend; `detect` never blocks the event loop."""

    name: str
    # Whether `detect` compares a file with the camera's previous one (`reference`): the stage
    # looks the previous file up only for such a detector.
    uses_reference: bool

    async def detect(
        self, path: Path, kind: str, *, reference: Path | None = None
    ) -> DetectionResult:
        """Detect objects in the image or video at `path` (`kind` is "image" or "video");
        `reference` is the camera's previous image, if the detector `uses_reference`.

        Raises `UndecodableMediaError` for a file that cannot be decoded,
        `DetectorUnavailableError` / `DetectorProtocolError` for transient service problems.
        """
        ...

    async def aclose(self) -> None:
        """Release sessions, connections and threads; the detector cannot be used afterwards."""
        ...


def check_kind(kind: str) -> MediaKind:
    """Return `kind` typed as a media kind, or raise ValueError for anything else."""
    if kind == "image":
        return "image"
    if kind == "video":
        return "video"
    raise ValueError(f"kind must be one of {MEDIA_KINDS}, got {kind!r}")


def check_sampling(frame_interval_seconds: float, max_frames: int) -> None:
    """Refuse video sampling settings that would sample nothing (`DetectorConfigError`)."""
    if frame_interval_seconds <= 0 or max_frames < 1:
        raise DetectorConfigError(
            "frame_interval_seconds must be > 0 and max_frames >= 1, got "
            f"{frame_interval_seconds} and {max_frames}"
        )


def filter_objects(
    objects: Iterable[DetectedObject],
    threshold: float,
    class_thresholds: Mapping[str, float],
) -> tuple[DetectedObject, ...]:
    """Keep objects at or above their class threshold (or the global one); order is kept."""
    return tuple(
        obj for obj in objects if obj.confidence >= class_thresholds.get(obj.label, threshold)
    )


def lowest_threshold(threshold: float, class_thresholds: Mapping[str, float]) -> float:
    """The smallest threshold any class may use: candidates below it can never be kept."""
    return min([threshold, *class_thresholds.values()])


def at_frame(result: DetectionResult, seconds: float) -> DetectionResult:
    """`result` of one sampled video frame, with its objects marked as seen at `seconds`."""
    return replace(
        result, objects=tuple(replace(obj, frame_seconds=seconds) for obj in result.objects)
    )


def merge_frames(results: Iterable[DetectionResult], detector: str) -> DetectionResult | None:
    """Merge the results of a video's sampled frames into one result (None if no frames).

    For each label, the objects of the single frame where that label reached its highest
    confidence are kept (earliest frame on ties). Boxes therefore come from one consistent frame
    per label and counts are not inflated by the same object seen in several frames ("two
    people" stays two, not twenty); each object keeps its `frame_seconds`. `inference_ms` is the
    sum over frames, the size is the first frame's, and `frames` is the number of frames
    detected.
    """
    frames = list(results)
    if not frames:
        return None
    best: dict[str, tuple[float, int]] = {}
    for index, frame in enumerate(frames):
        for obj in frame.objects:
            current = best.get(obj.label)
            if current is None or obj.confidence > current[0]:
                best[obj.label] = (obj.confidence, index)
    merged = [
        obj
        for label, (_, index) in best.items()
        for obj in frames[index].objects
        if obj.label == label
    ]
    merged.sort(key=lambda obj: obj.confidence, reverse=True)
    return DetectionResult(
        objects=tuple(merged),
        image_width=frames[0].image_width,
        image_height=frames[0].image_height,
        inference_ms=sum(frame.inference_ms for frame in frames),
        detector=detector,
        frames=sum(frame.frames for frame in frames),
        passes=sum(frame.passes for frame in frames),
    )

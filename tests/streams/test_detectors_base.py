"""Pure pieces of the detectors: filtering, merging frames, NMS, sampling times, the factory."""

from __future__ import annotations

import numpy as np
import pytest

from streams.detectors import (
    BoundingBox,
    DetectedObject,
    DetectionResult,
    DetectorConfig,
    DetectorConfigError,
    EmbeddedDetector,
    RtDetrDetector,
    build_detector,
    filter_objects,
    merge_frames,
)
from streams.detectors.base import at_frame
from streams.detectors.frames import next_sample_time
from streams.detectors.nanodet import batched_nms, side_distances


def obj(label: str, confidence: float, x: float = 0) -> DetectedObject:
    return DetectedObject(label, confidence, BoundingBox(x, 0, 10, 10))


def frame(*objects: DetectedObject, ms: float = 10.0) -> DetectionResult:
    return DetectionResult(objects, 640, 480, ms, "test")


@pytest.mark.parametrize(
    ("threshold", "overrides", "kept"),
    [
        (0.5, {}, ["person", "car"]),
        (0.3, {}, ["person", "car", "cat"]),
        (0.5, {"car": 0.8}, ["person"]),
        (0.5, {"cat": 0.2}, ["person", "car", "cat"]),
        (0.9, {}, []),
        (0.6, {}, ["person", "car"]),
    ],
)
def test_filter_objects_uses_class_overrides(
    threshold: float, overrides: dict[str, float], kept: list[str]
) -> None:
    """An object is kept at or above its class threshold, else the global one; order is kept."""
    objects = [obj("person", 0.8), obj("car", 0.6), obj("cat", 0.3)]
    assert [o.label for o in filter_objects(objects, threshold, overrides)] == kept


def test_merge_frames_keeps_each_label_from_its_best_frame() -> None:
    """Per label, the objects of the frame with its best confidence are kept, best first."""
    merged = merge_frames(
        [
            frame(obj("person", 0.6, x=1), obj("car", 0.9, x=1), ms=10),
            frame(obj("person", 0.8, x=2), obj("person", 0.5, x=3), obj("car", 0.7, x=2), ms=20),
            frame(ms=30),
        ],
        "merged",
    )
    assert merged == DetectionResult(
        objects=(obj("car", 0.9, x=1), obj("person", 0.8, x=2), obj("person", 0.5, x=3)),
        image_width=640,
        image_height=480,
        inference_ms=60.0,
        detector="merged",
        frames=3,
        passes=3,
    )


def test_merge_frames_keeps_the_frame_time_of_each_object() -> None:
    """Objects of a video frame are marked with its time, and merging keeps each one's time."""
    merged = merge_frames(
        [
            at_frame(frame(obj("person", 0.6), obj("car", 0.9)), 0.0),
            at_frame(frame(obj("person", 0.8)), 2.5),
        ],
        "merged",
    )
    assert merged is not None
    assert [(o.label, o.frame_seconds) for o in merged.objects] == [
        ("car", 0.0),
        ("person", 2.5),
    ]
    assert frame(obj("cat", 0.5)).objects[0].frame_seconds is None  # an image's object


def test_merge_frames_of_nothing_is_none() -> None:
    """No frames, no result."""
    assert merge_frames([], "merged") is None


@pytest.mark.parametrize(
    ("start", "interval", "now", "expected"),
    [
        (0.0, 1.0, 0.0, 1.0),
        (0.0, 1.0, 1.0, 2.0),
        (0.0, 1.0, 2.4, 3.0),
        (0.5, 2.0, 0.5, 2.5),
        (0.0, 0.5, 0.999_999_9, 1.5),
    ],
)
def test_next_sample_time_follows_the_interval_grid(
    start: float, interval: float, now: float, expected: float
) -> None:
    """After a frame at `now`, the next sample is the next multiple of the interval."""
    assert next_sample_time(start, interval, now) == pytest.approx(expected)


def test_batched_nms_suppresses_overlaps_within_a_class_only() -> None:
    """Overlapping boxes of one class collapse to the best; other classes survive."""
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32
    )
    scores = np.array([0.6, 0.9, 0.7, 0.5], dtype=np.float32)
    classes = np.array([0, 0, 1, 0], dtype=np.intp)
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [1, 2, 3]


def test_side_distances_are_softmax_expectations() -> None:
    """A one-hot-like bin distribution gives that bin's index as the distance."""
    raw = np.full((1, 44), -50.0, dtype=np.float32)
    for side, bin_index in enumerate([0, 3, 7, 10]):
        raw[0, side * 11 + bin_index] = 50.0
    assert side_distances(raw)[0].tolist() == pytest.approx([0.0, 3.0, 7.0, 10.0])


async def test_build_detector_picks_the_backend() -> None:
    """The factory returns the embedded detector by default and RT-DETR on request."""
    embedded = build_detector(DetectorConfig(threads=2, confidence_threshold=0.4))
    remote = build_detector(DetectorConfig(backend="rtdetr", rtdetr_url="http://127.0.0.1:1"))
    assert isinstance(embedded, EmbeddedDetector)
    assert (embedded.threads, embedded.confidence_threshold) == (2, 0.4)
    assert isinstance(remote, RtDetrDetector)
    assert remote.base_url == "http://127.0.0.1:1"
    await embedded.aclose()
    await remote.aclose()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "yolo"}, "backend 'yolo'"),
        ({"confidence_threshold": 1.5}, "confidence_threshold"),
        ({"class_thresholds": {"car": -0.1}}, "class_thresholds"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_detector_config_rejects_bad_settings(settings: dict[str, object], message: str) -> None:
    """Invalid settings raise one DetectorConfigError naming the problem."""
    with pytest.raises(DetectorConfigError, match=message):
        DetectorConfig(**settings)  # type: ignore[arg-type]


def test_rtdetr_detector_rejects_a_non_http_url() -> None:
    """The service URL must be http(s)."""
    with pytest.raises(DetectorConfigError, match="RTDETR_URL"):
        RtDetrDetector("127.0.0.1:8090")

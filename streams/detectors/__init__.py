"""Object detector backends: the embedded NanoDet (default, CPU) and a remote RT-DETR service.

`build_detector(DetectorConfig(...))` returns a `Detector`; see `base` for the result types and the
errors the detection stage tells apart (undecodable media vs. a detector that is unavailable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.detectors.base import (
    BoundingBox,
    DetectedObject,
    DetectionResult,
    Detector,
    DetectorConfigError,
    DetectorError,
    DetectorProtocolError,
    DetectorUnavailableError,
    UndecodableMediaError,
    filter_objects,
    merge_frames,
)
from streams.detectors.embedded import MODES, EmbeddedDetector
from streams.detectors.images import DEFAULT_MAX_IMAGE_BYTES
from streams.detectors.rtdetr import RtDetrDetector
from streams.resilience import DEFAULT_MAX_RESPONSE_BYTES

__all__ = [
    "BoundingBox",
    "DetectedObject",
    "DetectionResult",
    "Detector",
    "DetectorConfig",
    "DetectorConfigError",
    "DetectorError",
    "DetectorProtocolError",
    "DetectorUnavailableError",
    "EmbeddedDetector",
    "RtDetrDetector",
    "UndecodableMediaError",
    "build_detector",
    "filter_objects",
    "merge_frames",
]

BACKENDS: tuple[str, ...] = ("embedded", "rtdetr")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to build a detector; defaults match HSI's settings."""

    backend: str = "embedded"
    rtdetr_url: str = "http://127.0.0.1:8090"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 10.0
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 30.0
    max_concurrency: int = 4
    threads: int | None = None  # embedded: sessions at once; None: every core
    mode: str = "full"
    tile_size: int = 640
    motion_regions: int = 2
    confidence_threshold: float = 0.5
    class_thresholds: Mapping[str, float] = field(default_factory=dict)
    video_frame_interval_seconds: float = 2.0
    video_max_frames: int = 10
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.backend not in BACKENDS:
            problems.append(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        thresholds = {"confidence_threshold": self.confidence_threshold}
        thresholds.update({f"class_thresholds[{k!r}]": v for k, v in self.class_thresholds.items()})
        problems.extend(
            f"{name} = {value} is outside [0, 1]"
            for name, value in thresholds.items()
            if not 0.0 <= value <= 1.0
        )
        positive = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "circuit_reset_seconds": self.circuit_reset_seconds,
            "video_frame_interval_seconds": self.video_frame_interval_seconds,
        }
        problems.extend(
            f"{name} = {value} must be > 0" for name, value in positive.items() if value <= 0
        )
        at_least_one = {
            "circuit_failure_threshold": self.circuit_failure_threshold,
            "max_concurrency": self.max_concurrency,
            "threads": 1 if self.threads is None else self.threads,
            "video_max_frames": self.video_max_frames,
        }
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        problems.extend(
            f"{name} = {value} must be >= 1" for name, value in at_least_one.items() if value < 1
        )
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            problems.append("max_retries, backoff_base and backoff_cap must be >= 0")
        if problems:
            raise DetectorConfigError(
                "invalid detector settings: " + "; ".join(problems) + ". Fix: correct them."
            )


def build_detector(config: DetectorConfig) -> Detector:
    """The detector for `config.backend`; nothing is loaded or connected until first use."""
    if config.backend == "rtdetr":
        return RtDetrDetector(
            config.rtdetr_url,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_retries=config.max_retries,
            backoff_base=config.backoff_base,
            backoff_cap=config.backoff_cap,
            circuit_failure_threshold=config.circuit_failure_threshold,
            circuit_reset_seconds=config.circuit_reset_seconds,
            max_concurrency=config.max_concurrency,
            confidence_threshold=config.confidence_threshold,
            class_thresholds=config.class_thresholds,
            frame_interval_seconds=config.video_frame_interval_seconds,
            max_frames=config.video_max_frames,
            max_response_bytes=config.max_response_bytes,
        )
    return EmbeddedDetector(
        threads=config.threads,
        mode=config.mode,
        tile_size=config.tile_size,
        motion_regions=config.motion_regions,
        confidence_threshold=config.confidence_threshold,
        class_thresholds=config.class_thresholds,
        frame_interval_seconds=config.video_frame_interval_seconds,
        max_frames=config.video_max_frames,
        max_image_bytes=config.max_image_bytes,
    )

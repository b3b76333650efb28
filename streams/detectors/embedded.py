"""The default CPU detector: NanoDet-g 416 (COCO-80) run by onnxruntime, shipped with the package.

The ONNX session is created on first use, in a worker thread; every decode and inference runs in a
worker thread too (`asyncio.to_thread`), one at a time, so the event loop is never blocked and the
CPU use is bounded by `threads` (onnxruntime's intra-op threads).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from streams.detectors import nanodet
from streams.detectors.base import (
    DetectedObject,
    DetectionResult,
    DetectorConfigError,
    DetectorError,
    DetectorUnavailableError,
    check_kind,
    check_sampling,
    filter_objects,
    lowest_threshold,
    merge_frames,
)
from streams.detectors.frames import sample_frames
from streams.detectors.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
)

MODEL_PATH = Path(__file__).resolve().parent / "models" / "nanodet_g_416.onnx"
INPUT_NAME = "input_1:0"


class EmbeddedDetector:
    """NanoDet-g 416 on onnxruntime's CPUExecutionProvider; see `streams.detectors.nanodet`."""

    name: str = "embedded"

    def __init__(
        self,
        *,
        threads: int = 1,
        confidence_threshold: float = 0.5,
        class_thresholds: Mapping[str, float] | None = None,
        frame_interval_seconds: float = 2.0,
        max_frames: int = 10,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        model_path: Path = MODEL_PATH,
    ) -> None:
        if threads < 1:
            raise DetectorConfigError(f"threads must be >= 1, got {threads}")
        check_sampling(frame_interval_seconds, max_frames)
        self.threads = threads
        self.confidence_threshold = confidence_threshold
        self.class_thresholds: Mapping[str, float] = dict(class_thresholds or {})
        self.frame_interval_seconds = frame_interval_seconds
        self.max_frames = max_frames
        self.max_image_pixels = max_image_pixels
        self.max_image_bytes = max_image_bytes
        self.model_path = model_path
        self._session: Any = None
        self._session_lock = threading.Lock()
        self._busy = asyncio.Semaphore(1)
        self._closed = False

    async def detect(self, path: Path, kind: str) -> DetectionResult:
        """Detect objects in an image, or in frames sampled from a video (see `merge_frames`)."""
        media = check_kind(kind)
        async with self._busy:
            if self._closed:
                raise DetectorError(
                    "the embedded detector was closed; this is a bug in the caller. "
                    "Fix: build a new detector instead of reusing a closed one."
                )
            if media == "image":
                return await asyncio.to_thread(self._detect_image, path)
            return await asyncio.to_thread(self._detect_video, path)

    async def aclose(self) -> None:
        """Drop the ONNX session (its memory is freed once no inference uses it)."""
        self._closed = True
        async with self._busy:
            with self._session_lock:
                self._session = None

    def _detect_image(self, path: Path) -> DetectionResult:
        picture = decode_image(path, self.max_image_pixels, self.max_image_bytes)
        return self._detect_picture(picture)

    def _detect_video(self, path: Path) -> DetectionResult:
        pictures = sample_frames(
            path, self.frame_interval_seconds, self.max_frames, self.max_image_pixels
        )
        merged = merge_frames((self._detect_picture(p) for p in pictures), self.name)
        if merged is None:  # sample_frames never returns an empty list
            raise AssertionError("no frames sampled")
        return merged

    def _detect_picture(self, picture: Image.Image) -> DetectionResult:
        session = self._ensure_session()
        started = time.perf_counter()
        tensor, scale = nanodet.letterbox(picture)
        outputs = session.run(None, {INPUT_NAME: tensor})
        candidates = nanodet.decode_outputs(
            outputs,
            scale=scale,
            width=picture.width,
            height=picture.height,
            threshold=lowest_threshold(self.confidence_threshold, self.class_thresholds),
        )
        objects: tuple[DetectedObject, ...] = filter_objects(
            candidates, self.confidence_threshold, self.class_thresholds
        )
        return DetectionResult(
            objects=objects,
            image_width=picture.width,
            image_height=picture.height,
            inference_ms=(time.perf_counter() - started) * 1000.0,
            detector=self.name,
        )

    def _ensure_session(self) -> Any:
        with self._session_lock:
            if self._session is None:
                self._session = self._open_session()
            return self._session

    def _open_session(self) -> Any:
        import onnxruntime as ort  # heavy import, deferred to first use

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            raise DetectorUnavailableError(
                f"cannot load the embedded model {self.model_path.name} ({exc}); the package "
                "installation is probably incomplete or the file is damaged. Fix: reinstall "
                "HSI, or switch DETECTOR_BACKEND to rtdetr."
            ) from exc

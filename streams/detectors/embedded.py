"""The default CPU detector: NanoDet-g 416 (COCO-80) run by onnxruntime, shipped with the package.

Every core by default: `threads` onnxruntime sessions (one intra-op thread each; default the cores
this process may use) run at once, each in a worker thread (`asyncio.to_thread`), so the event loop
is never blocked and decoding, letterboxing and inference of several files overlap.

Where it looks (`mode`, see `streams.detectors.regions`): `full` runs one pass over the whole frame
(a person under ~200 px in a 1080p frame is too small for it); `tiles` adds SAHI-style overlapping
tiles of `tile_size` px; `motion` adds at most `motion_regions` crops around what changed since the
camera's previous frame (`reference`), and falls back to `tiles` when there is no previous frame
of the same size or the whole view changed.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from streams.detectors import nanodet, regions
from streams.detectors.base import (
    DetectedObject,
    DetectionResult,
    DetectorConfigError,
    DetectorError,
    DetectorUnavailableError,
    UndecodableMediaError,
    at_frame,
    check_kind,
    check_sampling,
    filter_objects,
    lowest_threshold,
    merge_frames,
)
from streams.detectors.frames import sample_video
from streams.detectors.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
)
from streams.detectors.regions import GreyArray

MODEL_PATH = Path(__file__).resolve().parent / "models" / "nanodet_g_416.onnx"
INPUT_NAME = "input_1:0"
MODES: tuple[str, ...] = ("full", "tiles", "motion")
GREY_CACHE = 64  # motion pictures kept for the next file of the camera (about 130 kB each)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class EmbeddedDetector:
    """NanoDet-g 416 on onnxruntime's CPUExecutionProvider; see `streams.detectors.nanodet`."""

    name: str = "embedded"

    def __init__(
        self,
        *,
        threads: int | None = None,
        mode: str = "full",
        tile_size: int = 640,
        tile_overlap: float = 0.2,
        motion_regions: int = 2,
        confidence_threshold: float = 0.5,
        class_thresholds: Mapping[str, float] | None = None,
        frame_interval_seconds: float = 2.0,
        max_frames: int = 10,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        model_path: Path = MODEL_PATH,
    ) -> None:
        threads = available_cores() if threads is None else threads
        if threads < 1:
            raise DetectorConfigError(f"threads must be >= 1, got {threads}")
        if mode not in MODES:
            raise DetectorConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if tile_size < nanodet.INPUT_SIZE or not 0.0 <= tile_overlap < 0.9 or motion_regions < 0:
            raise DetectorConfigError(
                f"tile_size = {tile_size} must be >= {nanodet.INPUT_SIZE}, tile_overlap = "
                f"{tile_overlap} in [0, 0.9) and motion_regions = {motion_regions} >= 0"
            )
        check_sampling(frame_interval_seconds, max_frames)
        self.threads = threads
        self.mode = mode
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.motion_regions = motion_regions
        self.uses_reference = mode == "motion"
        self.confidence_threshold = confidence_threshold
        self.class_thresholds: Mapping[str, float] = dict(class_thresholds or {})
        self.frame_interval_seconds = frame_interval_seconds
        self.max_frames = max_frames
        self.max_image_pixels = max_image_pixels
        self.max_image_bytes = max_image_bytes
        self.model_path = model_path
        self._sessions: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._session_lock = threading.Lock()
        self._busy = asyncio.Semaphore(threads)
        self._greys: OrderedDict[tuple[int, ...], GreyArray] = OrderedDict()
        self._greys_lock = threading.Lock()
        self._closed = False

    async def detect(
        self, path: Path, kind: str, *, reference: Path | None = None
    ) -> DetectionResult:
        """Detect objects in an image, or in frames sampled from a video (see `merge_frames`).

        `reference`: the camera's previous file, compared with this one in `motion` mode (a
        reference that cannot be read is no reference: the tiles are used).
        """
        media = check_kind(kind)
        async with self._busy:
            if self._closed:
                raise DetectorError(
                    "the embedded detector was closed; this is a bug in the caller. "
                    "Fix: build a new detector instead of reusing a closed one."
                )
            if media == "image":
                return await asyncio.to_thread(self._detect_image, path, reference)
            return await asyncio.to_thread(self._detect_video, path, reference)

    async def aclose(self) -> None:
        """Drop the ONNX sessions (their memory is freed once no inference uses them)."""
        self._closed = True
        for _ in range(self.threads):  # wait for every running inference
            await self._busy.acquire()
        with self._session_lock:
            while not self._sessions.empty():
                self._sessions.get_nowait()
        with self._greys_lock:
            self._greys.clear()
        for _ in range(self.threads):  # a later `detect` says the detector is closed
            self._busy.release()

    def detect_picture(
        self, picture: Image.Image, reference: Image.Image | None = None
    ) -> DetectionResult:
        """Objects in one RGB picture (blocking); `reference`: the camera's previous picture,
        compared in `motion` mode."""
        if self.mode != "motion":
            return self._detect_picture(picture, None, None)
        previous = None if reference is None else regions.motion_grey(reference)
        return self._detect_picture(picture, regions.motion_grey(picture), previous)

    def _detect_image(self, path: Path, reference: Path | None) -> DetectionResult:
        picture = decode_image(path, self.max_image_pixels, self.max_image_bytes)
        if self.mode != "motion":
            return self._detect_picture(picture, None, None)
        grey = self._remember_grey(path, picture)
        return self._detect_picture(picture, grey, self._grey_of(reference))

    def _detect_video(self, path: Path, reference: Path | None) -> DetectionResult:
        sampled = sample_video(
            path, self.frame_interval_seconds, self.max_frames, self.max_image_pixels
        )
        previous = self._grey_of(reference) if self.mode == "motion" else None
        results: list[DetectionResult] = []
        for frame in sampled:  # each sampled frame is the next one's reference
            grey = regions.motion_grey(frame.picture) if self.mode == "motion" else None
            result = self._detect_picture(frame.picture, grey, previous)
            results.append(at_frame(result, frame.seconds))
            previous = grey
        merged = merge_frames(results, self.name)
        if merged is None:  # sample_video never returns an empty list
            raise AssertionError("no frames sampled")
        return merged

    def _detect_picture(
        self, picture: Image.Image, grey: GreyArray | None, reference: GreyArray | None
    ) -> DetectionResult:
        started = time.perf_counter()
        looked = regions.regions_for(
            self.mode,
            picture.width,
            picture.height,
            grey,
            reference,
            size=nanodet.INPUT_SIZE,
            tile=self.tile_size,
            overlap=self.tile_overlap,
            budget=self.motion_regions,
        )
        threshold = lowest_threshold(self.confidence_threshold, self.class_thresholds)
        session = self._take_session()
        try:
            candidates = self._pass(session, picture, threshold)
            for region in looked:
                crop = picture.crop((region.x, region.y, region.right, region.bottom))
                candidates.extend(regions.shifted(self._pass(session, crop, threshold), region))
        finally:
            self._sessions.put(session)
        merged = regions.merge_passes(candidates) if looked else candidates
        objects: tuple[DetectedObject, ...] = filter_objects(
            merged, self.confidence_threshold, self.class_thresholds
        )
        return DetectionResult(
            objects=objects,
            image_width=picture.width,
            image_height=picture.height,
            inference_ms=(time.perf_counter() - started) * 1000.0,
            detector=self.name,
            passes=1 + len(looked),
        )

    @staticmethod
    def _pass(session: Any, picture: Image.Image, threshold: float) -> list[DetectedObject]:
        tensor, scale = nanodet.letterbox(picture)
        outputs = session.run(None, {INPUT_NAME: tensor})
        return nanodet.decode_outputs(
            outputs, scale=scale, width=picture.width, height=picture.height, threshold=threshold
        )

    def _remember_grey(self, path: Path, picture: Image.Image) -> GreyArray:
        grey = regions.motion_grey(picture)
        key = _file_key(path)
        if key is not None:
            with self._greys_lock:
                self._greys[key] = grey
                self._greys.move_to_end(key)
                while len(self._greys) > GREY_CACHE:
                    self._greys.popitem(last=False)
        return grey

    def _grey_of(self, path: Path | None) -> GreyArray | None:
        """The motion picture of the camera's previous file: remembered from when it was
        detected, else decoded (the same function of the file's bytes either way, so a file
        detected again compares with the same picture); None if it cannot be read."""
        if path is None:
            return None
        key = _file_key(path)
        if key is None:
            return None
        with self._greys_lock:
            remembered = self._greys.get(key)
        if remembered is not None:
            return remembered
        try:
            picture = decode_image(path, self.max_image_pixels, self.max_image_bytes)
        except UndecodableMediaError:
            return None
        return self._remember_grey(path, picture)

    def _take_session(self) -> Any:
        """A free session of the pool, else a new one (`detect` lets at most `threads` run at
        once, so at most that many are opened)."""
        with self._session_lock:
            try:
                return self._sessions.get_nowait()
            except queue.Empty:
                return self._open_session()

    def _open_session(self) -> Any:
        import onnxruntime as ort  # heavy import, deferred to first use

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
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


def _file_key(path: Path) -> tuple[int, ...] | None:
    """Who a file is (device, inode, size, modification time), or None if it is gone."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns

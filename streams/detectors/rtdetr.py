"""HTTP client of an RT-DETR detection service.

Contract: `POST {base_url}/detect` with the picture in the multipart field `file`; the answer is
JSON `{"detections": [{"class": str, "confidence": float, "bbox": {"x", "y", "width", "height"}}],
"inference_time_ms": float, "image_width": int, "image_height": int}`, where a bbox may also be a
list `[x, y, width, height]` (pixels, top-left origin). `inference_time_ms` may be missing (the
round-trip time is used instead).

Failure handling, per request:
- connect errors, timeouts and 5xx are retried with exponential backoff and jitter, then raise
  `DetectorUnavailableError`; each one counts as a failure for the circuit breaker;
- 400, 413, 415 and 422 mean the picture is bad: `UndecodableMediaError`, no retry;
- 429 means the service is saturated: `DetectorUnavailableError`, no retry, no breaker failure;
- any other 4xx, a body that does not follow the contract, or one longer than
  `max_response_bytes` (not read past the limit): `DetectorProtocolError`, no retry, a breaker
  failure (the service is not behaving);
- while the circuit is open, requests are refused at once with `DetectorUnavailableError`.
Videos are sampled like the embedded backend (`streams.detectors.frames`) and each frame is sent
as a JPEG, one after the other; the results are merged by `merge_frames`.
"""

from __future__ import annotations

import asyncio
import io
import math
import mimetypes
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from streams.detectors.base import (
    BoundingBox,
    DetectedObject,
    DetectionResult,
    DetectorConfigError,
    DetectorError,
    DetectorProtocolError,
    DetectorUnavailableError,
    UndecodableMediaError,
    at_frame,
    check_kind,
    check_sampling,
    filter_objects,
    merge_frames,
)
from streams.detectors.frames import sample_video
from streams.detectors.images import DEFAULT_MAX_IMAGE_PIXELS
from streams.resilience import (
    DEFAULT_MAX_RESPONSE_BYTES,
    CircuitBreaker,
    ResponseTooLargeError,
    post_capped,
    retry_call,
)

BAD_MEDIA_STATUSES = frozenset({400, 413, 415, 422})
JPEG_QUALITY = 90


class _TransientError(DetectorUnavailableError):
    """A failure worth retrying: connect error, timeout or 5xx."""


class RtDetrDetector:
    """Detector backed by a remote RT-DETR service (see the module docstring for the contract)."""

    name: str = "rtdetr"
    uses_reference: bool = False

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        circuit_failure_threshold: int = 5,
        circuit_reset_seconds: float = 30.0,
        max_concurrency: int = 4,
        confidence_threshold: float = 0.5,
        class_thresholds: Mapping[str, float] | None = None,
        frame_interval_seconds: float = 2.0,
        max_frames: int = 10,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise DetectorConfigError(
                f"RTDETR_URL {base_url!r} is not an http(s) URL. "
                "Fix: set it to the service's address, e.g. http://127.0.0.1:8090."
            )
        if max_retries < 0 or max_concurrency < 1:
            raise DetectorConfigError(
                "max_retries must be >= 0 and max_concurrency >= 1, got "
                f"{max_retries} and {max_concurrency}"
            )
        if max_response_bytes < 1:
            raise DetectorConfigError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        check_sampling(frame_interval_seconds, max_frames)
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.confidence_threshold = confidence_threshold
        self.class_thresholds: Mapping[str, float] = dict(class_thresholds or {})
        self.frame_interval_seconds = frame_interval_seconds
        self.max_frames = max_frames
        self.max_image_pixels = max_image_pixels
        self.max_response_bytes = max_response_bytes
        self.breaker = CircuitBreaker(circuit_failure_threshold, circuit_reset_seconds)
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._slots = asyncio.Semaphore(max_concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=read_timeout,
                write=read_timeout,
                pool=connect_timeout,
            ),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        )

    async def detect(
        self, path: Path, kind: str, *, reference: Path | None = None
    ) -> DetectionResult:
        """Send the image (as is) or sampled video frames (as JPEG) to the service (the service
        looks at each frame alone: `reference` is not used)."""
        media = check_kind(kind)
        if self._client.is_closed:
            raise DetectorError(
                "the RT-DETR detector was closed; this is a bug in the caller. "
                "Fix: build a new detector instead of reusing a closed one."
            )
        if media == "image":
            content = await asyncio.to_thread(_read_file, path)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return await self._detect_bytes(path.name, content, content_type)
        jpegs = await asyncio.to_thread(self._video_jpegs, path)
        results = [
            at_frame(
                await self._detect_bytes(f"{path.stem}-{index}.jpg", jpeg, "image/jpeg"), seconds
            )
            for index, (seconds, jpeg) in enumerate(jpegs)
        ]
        merged = merge_frames(results, self.name)
        if merged is None:  # sample_video never returns an empty list
            raise AssertionError("no frames sampled")
        return merged

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    def _video_jpegs(self, path: Path) -> list[tuple[float, bytes]]:
        """Each sampled frame's time and JPEG."""
        frames = sample_video(
            path, self.frame_interval_seconds, self.max_frames, self.max_image_pixels
        )
        return [(frame.seconds, _jpeg(frame.picture)) for frame in frames]

    async def _detect_bytes(
        self, filename: str, content: bytes, content_type: str
    ) -> DetectionResult:
        async def attempt() -> DetectionResult:
            return await self._request(filename, content, content_type)

        try:
            return await retry_call(
                attempt,
                attempts=self.max_retries + 1,
                base=self.backoff_base,
                cap=self.backoff_cap,
                retry_on=lambda exc: isinstance(exc, _TransientError),
                sleep=self._sleep,
                rand=self._rand,
            )
        except _TransientError as exc:
            raise DetectorUnavailableError(
                f"the RT-DETR service at {self.base_url} failed {self.max_retries + 1} "
                f"time(s) for {filename}; last: {exc}"
            ) from exc

    async def _request(self, filename: str, content: bytes, content_type: str) -> DetectionResult:
        """One POST /detect: the breaker's leave, the request, its status, its answer."""
        self._check_circuit()
        response, elapsed_ms = await self._post(filename, content, content_type)
        self._check_status(filename, response)
        return self._result(response, elapsed_ms)

    def _check_circuit(self) -> None:
        """Refuse at once while the circuit is open."""
        if not self.breaker.allow(self._clock()):
            raise DetectorUnavailableError(
                f"the RT-DETR service at {self.base_url} is not called: its circuit is open "
                f"after {self.breaker.consecutive_failures} consecutive failures; it is probably "
                f"down or overloaded. Retry in {self.breaker.retry_after(self._clock()):.0f} s "
                "(automatic); fix the service if this persists."
            )

    async def _post(
        self, filename: str, content: bytes, content_type: str
    ) -> tuple[httpx.Response, float]:
        """The service's answer and its round-trip time (ms); transport failures translated."""
        started = time.perf_counter()
        try:
            async with self._slots:
                response = await post_capped(
                    self._client,
                    f"{self.base_url}/detect",
                    max_bytes=self.max_response_bytes,
                    files={"file": (filename, content, content_type)},
                )
        except (ResponseTooLargeError, httpx.TransportError) as exc:
            self.breaker.record_failure(self._clock())
            raise self._post_error(exc) from exc
        return response, (time.perf_counter() - started) * 1000.0

    def _post_error(self, exc: ResponseTooLargeError | httpx.TransportError) -> DetectorError:
        """What a failed POST is reported as: its likely cause and the fix."""
        if isinstance(exc, ResponseTooLargeError):
            return DetectorProtocolError(
                f"the RT-DETR service at {self.base_url} sent an answer that is too large ({exc}); "
                "a detection answer is a few kilobytes, so RTDETR_URL probably points at "
                "something else. Fix: correct RTDETR_URL."
            )
        if isinstance(exc, httpx.TimeoutException):
            return _TransientError(
                f"timed out ({type(exc).__name__}); the service is probably overloaded or the "
                "read timeout is too short for it. Fix: check the service, or raise "
                "DETECTOR_READ_TIMEOUT_SECONDS."
            )
        return _TransientError(
            f"cannot connect ({type(exc).__name__}: {exc}); the service is probably not "
            "running or RTDETR_URL is wrong. Fix: start the service or correct RTDETR_URL."
        )

    def _check_status(self, filename: str, response: httpx.Response) -> None:
        """Raise for an answer other than 200, as the module doc says for each status."""
        status = response.status_code
        if status >= 500:
            self.breaker.record_failure(self._clock())
            raise _TransientError(
                f"answered HTTP {status} ({_excerpt(response)}); the service failed internally. "
                "Fix: check the service's logs."
            )
        if status in BAD_MEDIA_STATUSES:
            self.breaker.record_success(self._clock())
            raise UndecodableMediaError(
                f"{filename}: the RT-DETR service refused the picture with HTTP {status} "
                f"({_excerpt(response)}); the file is probably corrupt, too large or not an "
                "image. Fix: check the camera's upload; the file is skipped."
            )
        if status == 429:
            self.breaker.record_success(self._clock())
            raise DetectorUnavailableError(
                f"the RT-DETR service at {self.base_url} answered HTTP 429: it is saturated. "
                "The entry is retried later; fix: lower DETECTOR_MAX_CONCURRENCY or scale the "
                "service."
            )
        if status != 200:
            self.breaker.record_failure(self._clock())
            raise DetectorProtocolError(
                f"the RT-DETR service at {self.base_url} answered HTTP {status} to POST /detect "
                f"({_excerpt(response)}); RTDETR_URL probably points at something else. "
                "Fix: correct RTDETR_URL."
            )

    def _result(self, response: httpx.Response, elapsed_ms: float) -> DetectionResult:
        """The detections of a 200 answer, filtered by the confidence thresholds."""
        try:
            result = parse_response(response.json(), elapsed_ms, self.name)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser goes
            self.breaker.record_failure(self._clock())
            raise DetectorProtocolError(
                f"the RT-DETR service at {self.base_url} sent an invalid answer ({exc}; body: "
                f"{_excerpt(response)}); it probably runs an incompatible version. "
                "Fix: run a service that speaks the documented /detect contract."
            ) from exc
        self.breaker.record_success(self._clock())
        return DetectionResult(
            objects=filter_objects(
                result.objects, self.confidence_threshold, self.class_thresholds
            ),
            image_width=result.image_width,
            image_height=result.image_height,
            inference_ms=result.inference_ms,
            detector=self.name,
        )


def parse_response(body: Any, elapsed_ms: float, detector: str) -> DetectionResult:
    """Validate a /detect answer; raises ValueError (or TypeError/KeyError) when it is invalid."""
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    raw_detections = body["detections"]
    if not isinstance(raw_detections, list):
        raise ValueError("'detections' is not a list")
    objects = tuple(_parse_detection(item) for item in raw_detections)
    width = _positive_int(body["image_width"], "image_width")
    height = _positive_int(body["image_height"], "image_height")
    inference = body.get("inference_time_ms")
    inference_ms = elapsed_ms if inference is None else _number(inference, "inference_time_ms")
    return DetectionResult(
        objects=tuple(sorted(objects, key=lambda obj: obj.confidence, reverse=True)),
        image_width=width,
        image_height=height,
        inference_ms=inference_ms,
        detector=detector,
    )


def _parse_detection(item: Any) -> DetectedObject:
    if not isinstance(item, dict):
        raise ValueError(f"a detection is not an object: {item!r:.80}")
    label = item["class"]
    if not isinstance(label, str) or not label:
        raise ValueError(f"a detection's class is not a non-empty string: {label!r:.80}")
    confidence = _number(item["confidence"], "confidence")
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence {confidence} is outside [0, 1]")
    raw_box = item["bbox"]
    if isinstance(raw_box, dict):
        values = [raw_box["x"], raw_box["y"], raw_box["width"], raw_box["height"]]
    elif isinstance(raw_box, list) and len(raw_box) == 4:
        values = raw_box
    else:
        raise ValueError(f"bbox is neither an object nor [x, y, width, height]: {raw_box!r:.80}")
    x, y, width, height = (_number(value, "bbox") for value in values)
    if width < 0 or height < 0:
        raise ValueError(f"bbox has a negative size: {width}x{height}")
    return DetectedObject(label, confidence, BoundingBox(x, y, width, height))


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field} is not a number: {value!r:.80}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field} is not finite: {value!r}")
    return number


def _positive_int(value: Any, field: str) -> int:
    number = _number(value, field)
    if number <= 0 or not number.is_integer():
        raise ValueError(f"{field} is not a positive integer: {value!r}")
    return int(number)


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return (text[:limit] + "…") if len(text) > limit else (text or "empty body")


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UndecodableMediaError(
            f"{path.name}: cannot be read ({exc.strerror or exc}); it was probably removed or "
            "its permissions are wrong. Fix: check the upload folder."
        ) from exc


def _jpeg(frame: Image.Image) -> bytes:
    buffer = io.BytesIO()
    frame.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()

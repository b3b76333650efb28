"""The RT-DETR HTTP backend against a fake service speaking the real /detect contract."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.detectors import (
    BoundingBox,
    DetectedObject,
    DetectorError,
    DetectorProtocolError,
    DetectorUnavailableError,
    RtDetrDetector,
    UndecodableMediaError,
)
from streams.resilience import CircuitState
from tests.fakes.media import photo, write_video
from tests.fakes.rtdetr import PERSON, FakeRtDetr, serve_fake_rtdetr
from tests.fakes.server import free_port

CAT = {"class": "cat", "confidence": 0.4, "bbox": {"x": 1, "y": 2, "width": 3, "height": 4}}


def state(detector: RtDetrDetector) -> CircuitState:
    """The detector's circuit state, read afresh (a property mypy would otherwise narrow)."""
    return detector.breaker.state


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[FakeRtDetr, str]]:
    """One fake service for the module."""
    with serve_fake_rtdetr() as running:
        yield running


@pytest.fixture
def fake(service: tuple[FakeRtDetr, str]) -> FakeRtDetr:
    """The fake service, reset to normal answers with zeroed counters."""
    service[0].reset()
    return service[0]


@pytest.fixture
def url(service: tuple[FakeRtDetr, str]) -> str:
    """The fake service's base URL."""
    return service[1]


@pytest.fixture
async def detectors() -> AsyncIterator[list[RtDetrDetector]]:
    """Detectors made by a test, closed after it."""
    made: list[RtDetrDetector] = []
    yield made
    for detector in made:
        await detector.aclose()


@pytest.fixture
def make(detectors: list[RtDetrDetector], url: str) -> Any:
    """Build a detector with fast test settings, overridable per test."""

    def build(**overrides: Any) -> RtDetrDetector:
        settings: dict[str, Any] = {
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "max_retries": 2,
            "backoff_base": 0.01,
            "backoff_cap": 0.05,
            "confidence_threshold": 0.3,
            "circuit_failure_threshold": 10,
            "circuit_reset_seconds": 30.0,
        }
        settings.update(overrides)
        base_url = settings.pop("base_url", url)
        detector = RtDetrDetector(base_url, **settings)
        detectors.append(detector)
        return detector

    return build


@pytest.mark.parametrize("bbox_as_list", [False, True], ids=["bbox-object", "bbox-list"])
async def test_detect_returns_the_service_detections(
    fake: FakeRtDetr, make: Any, bbox_as_list: bool
) -> None:
    """Both bbox forms are parsed into the same objects, best confidence first."""
    fake.answer_normally([CAT, PERSON], bbox_as_list=bbox_as_list)
    result = await make().detect(photo("cat-chelsea.jpg"), "image")
    assert result.objects == (
        DetectedObject("person", 0.91, BoundingBox(10.0, 20.0, 100.0, 200.0)),
        DetectedObject("cat", 0.4, BoundingBox(1.0, 2.0, 3.0, 4.0)),
    )
    assert (result.image_width, result.image_height) == (451, 300)
    assert (result.inference_ms, result.detector, result.frames) == (12.5, "rtdetr", 1)
    [upload] = fake.uploads
    assert (upload.filename, upload.content_type) == ("cat-chelsea.jpg", "image/jpeg")
    assert upload.size == photo("cat-chelsea.jpg").stat().st_size


async def test_detect_applies_thresholds(fake: FakeRtDetr, make: Any) -> None:
    """The global threshold and per-class overrides filter the service's answer."""
    fake.answer_normally([CAT, PERSON])
    result = await make(confidence_threshold=0.3, class_thresholds={"person": 0.95}).detect(
        photo("cat-chelsea.jpg"), "image"
    )
    assert [obj.label for obj in result.objects] == ["cat"]


async def test_detect_retries_server_errors_then_succeeds(fake: FakeRtDetr, make: Any) -> None:
    """Two 500s then a good answer: three requests, one result, the circuit stays closed."""
    fake.fail_times(2)
    detector = make(max_retries=3)
    result = await detector.detect(photo("cat-chelsea.jpg"), "image")
    assert [obj.label for obj in result.objects] == ["person"]
    assert fake.requests == 3
    assert state(detector) is CircuitState.CLOSED


async def test_detect_gives_up_after_retrying_server_errors(fake: FakeRtDetr, make: Any) -> None:
    """Persistent 503s: 1 + max_retries requests, then DetectorUnavailableError."""
    fake.fail_times(100, status=503)
    with pytest.raises(DetectorUnavailableError, match="503"):
        await make(max_retries=2).detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 3


@pytest.mark.parametrize("status", [400, 415, 422])
async def test_detect_does_not_retry_a_refused_picture(
    fake: FakeRtDetr, make: Any, status: int
) -> None:
    """A 4xx about the picture is undecodable media after exactly one request."""
    fake.reject(status)
    with pytest.raises(UndecodableMediaError, match=str(status)):
        await make().detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 1


async def test_detect_reports_a_picture_the_service_cannot_decode(
    fake: FakeRtDetr, make: Any, tmp_path: Path
) -> None:
    """Random bytes sent as an image come back as 400: undecodable media, no retry."""
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(random.Random(3).randbytes(2048))
    with pytest.raises(UndecodableMediaError, match="cannot decode"):
        await make().detect(noise, "image")
    assert fake.requests == 1


async def test_detect_treats_an_unknown_route_as_a_protocol_error(
    fake: FakeRtDetr, make: Any, url: str
) -> None:
    """A 404 (wrong URL) is a protocol error, not retried."""
    with pytest.raises(DetectorProtocolError, match="404"):
        await make(base_url=f"{url}/nothing-here").detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 0


async def test_detect_times_out_then_gives_up(fake: FakeRtDetr, make: Any) -> None:
    """A service slower than the read timeout is retried, then reported unavailable."""
    fake.answer_slowly(0.6)
    with pytest.raises(DetectorUnavailableError, match="timed out"):
        await make(read_timeout=0.15, max_retries=1).detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 2


async def test_detect_reports_a_closed_port_as_unavailable(make: Any) -> None:
    """Connection refused is retried, then reported unavailable."""
    detector = make(base_url=f"http://127.0.0.1:{free_port()}", max_retries=1)
    with pytest.raises(DetectorUnavailableError, match="cannot connect"):
        await detector.detect(photo("cat-chelsea.jpg"), "image")
    assert detector.breaker.consecutive_failures == 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Bad gateway</html>",
        b"[]",
        b'{"detections": []}',
        b'{"detections": {}, "image_width": 1, "image_height": 1}',
        b'{"detections": [{"class": "cat", "confidence": 1.5, "bbox": [0, 0, 1, 1]}],'
        b' "image_width": 1, "image_height": 1}',
        b'{"detections": [{"class": "cat", "confidence": 0.5, "bbox": [0, 0, 1]}],'
        b' "image_width": 1, "image_height": 1}',
        b'{"detections": [{"class": "cat", "confidence": "high", "bbox": [0, 0, 1, 1]}],'
        b' "image_width": 1, "image_height": 1}',
        b'{"detections": [], "image_width": 0, "image_height": 1}',
    ],
    ids=[
        "not-json",
        "not-an-object",
        "no-size",
        "detections-not-a-list",
        "confidence-out-of-range",
        "short-bbox",
        "confidence-not-a-number",
        "zero-width",
    ],
)
async def test_detect_rejects_an_invalid_body(fake: FakeRtDetr, make: Any, body: bytes) -> None:
    """A 200 whose body breaks the contract is a protocol error, not retried."""
    fake.answer_garbage(body)
    with pytest.raises(DetectorProtocolError, match="invalid answer"):
        await make().detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 1


async def test_circuit_opens_refuses_then_half_opens(fake: FakeRtDetr, make: Any) -> None:
    """After the threshold no request is sent; after the reset one probe closes it again."""
    detector = make(max_retries=0, circuit_failure_threshold=2, circuit_reset_seconds=0.3)
    fake.fail_times(100)
    for _ in range(2):
        with pytest.raises(DetectorUnavailableError, match="500"):
            await detector.detect(photo("cat-chelsea.jpg"), "image")
    assert state(detector) is CircuitState.OPEN
    with pytest.raises(DetectorUnavailableError, match="circuit is open"):
        await detector.detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 2
    fake.answer_normally()
    await asyncio.sleep(0.35)
    result = await detector.detect(photo("cat-chelsea.jpg"), "image")
    assert [obj.label for obj in result.objects] == ["person"]
    assert fake.requests == 3
    assert state(detector) is CircuitState.CLOSED


async def test_circuit_stops_retries_once_open(fake: FakeRtDetr, make: Any) -> None:
    """Retries within one call stop as soon as the failures open the circuit."""
    fake.fail_times(100)
    detector = make(max_retries=5, circuit_failure_threshold=2)
    with pytest.raises(DetectorUnavailableError, match="circuit is open"):
        await detector.detect(photo("cat-chelsea.jpg"), "image")
    assert fake.requests == 2


async def test_detect_honours_the_concurrency_cap(fake: FakeRtDetr, make: Any) -> None:
    """Six simultaneous detections never put more than two requests in flight."""
    fake.answer_slowly(0.1)
    detector = make(max_concurrency=2)
    results = await asyncio.gather(
        *(detector.detect(photo("cat-chelsea.jpg"), "image") for _ in range(6))
    )
    assert len(results) == 6
    assert fake.requests == 6
    assert fake.max_concurrent == 2


async def test_detect_video_sends_sampled_frames_as_jpeg(
    fake: FakeRtDetr, make: Any, tmp_path: Path
) -> None:
    """A 3 s clip sampled every second is sent as three JPEG frames and merged."""
    clip = write_video(tmp_path / "clip.mp4", [(photo("person-cameraman.jpg"), 3.0)], fps=4)
    result = await make(frame_interval_seconds=1.0, max_frames=10).detect(clip, "video")
    assert result.frames == 3
    assert fake.requests == 3
    assert {upload.content_type for upload in fake.uploads} == {"image/jpeg"}
    assert [upload.filename for upload in fake.uploads] == [
        "clip-0.jpg",
        "clip-1.jpg",
        "clip-2.jpg",
    ]
    assert (result.image_width, result.image_height) == (512, 384)
    assert [obj.label for obj in result.objects] == ["person"]
    assert result.objects[0].frame_seconds == 0.0  # the same in every frame: the earliest
    assert result.inference_ms == pytest.approx(3 * 12.5)


async def test_detect_video_rejects_an_undecodable_clip(
    fake: FakeRtDetr, make: Any, tmp_path: Path
) -> None:
    """A clip that cannot be decoded is undecodable media and nothing is sent."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(512))
    with pytest.raises(UndecodableMediaError):
        await make().detect(broken, "video")
    assert fake.requests == 0


async def test_detect_after_aclose_fails_clearly(make: Any) -> None:
    """A closed detector refuses to work."""
    detector = make()
    await detector.aclose()
    with pytest.raises(DetectorError, match="closed"):
        await detector.detect(photo("cat-chelsea.jpg"), "image")

"""The embedded NanoDet detector on real photos, broken files and generated videos."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from streams.detectors import (
    DetectionResult,
    DetectorError,
    EmbeddedDetector,
    UndecodableMediaError,
)
from tests.fakes.media import photo, png_bomb, write_video

CONFIDENCE_TOLERANCE = 0.03
BOX_TOLERANCE = 6.0


@pytest.fixture(scope="module")
async def detector() -> AsyncIterator[EmbeddedDetector]:
    """One detector (one ONNX session) for the module, at the README's threshold 0.35."""
    embedded = EmbeddedDetector(
        confidence_threshold=0.35, frame_interval_seconds=1.0, max_frames=10
    )
    yield embedded
    await embedded.aclose()


def top(result: DetectionResult, label: str) -> tuple[float, tuple[float, float, float, float]]:
    best = max((obj for obj in result.objects if obj.label == label), key=lambda o: o.confidence)
    box = best.bbox
    return best.confidence, (box.x, box.y, box.x + box.width, box.y + box.height)


@pytest.mark.parametrize(
    ("name", "label", "confidence", "box"),
    [
        ("person-astronaut.jpg", "person", 0.73, (14, 14, 363, 507)),
        ("person-cameraman.jpg", "person", 0.88, (3, 67, 320, 512)),
        ("cat-chelsea.jpg", "cat", 0.53, (1, 0, 441, 295)),
        ("empty-coffee.jpg", "dining table", 0.43, (11, 7, 579, 395)),
    ],
)
async def test_detect_matches_reference_results(
    detector: EmbeddedDetector,
    name: str,
    label: str,
    confidence: float,
    box: tuple[float, float, float, float],
) -> None:
    """The top detection of each reference photo matches the model README within tolerance."""
    result = await detector.detect(photo(name), "image")
    found_confidence, found_box = top(result, label)
    assert found_confidence == pytest.approx(confidence, abs=CONFIDENCE_TOLERANCE)
    assert found_box == pytest.approx(box, abs=BOX_TOLERANCE)
    assert result.objects[0].label == label
    assert result.detector == "embedded"
    assert result.frames == 1
    assert result.inference_ms > 0
    with Image.open(photo(name)) as original:
        assert (result.image_width, result.image_height) == original.size


async def test_detect_finds_no_person_in_the_coffee_photo(detector: EmbeddedDetector) -> None:
    """The coffee photo has a dining table but no person."""
    result = await detector.detect(photo("empty-coffee.jpg"), "image")
    assert "person" not in {obj.label for obj in result.objects}


async def test_detect_finds_nothing_in_the_rocket_photo(detector: EmbeddedDetector) -> None:
    """The rocket photo yields no detection at threshold 0.35."""
    result = await detector.detect(photo("empty-rocket.jpg"), "image")
    assert result.objects == ()


async def test_detect_applies_class_thresholds() -> None:
    """A per-class threshold above the confidence drops that class, others stay."""
    embedded = EmbeddedDetector(confidence_threshold=0.35, class_thresholds={"car": 0.9})
    try:
        result = await embedded.detect(photo("person-cameraman.jpg"), "image")
    finally:
        await embedded.aclose()
    assert [obj.label for obj in result.objects] == ["person"]


async def test_detect_orients_by_exif(detector: EmbeddedDetector, tmp_path: Path) -> None:
    """A photo tagged as rotated 90° is detected upright, with swapped dimensions."""
    rotated = tmp_path / "rotated.jpg"
    with Image.open(photo("cat-chelsea.jpg")) as original:
        exif = original.getexif()
        exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
        original.save(rotated, exif=exif)
    result = await detector.detect(rotated, "image")
    assert (result.image_width, result.image_height) == (300, 451)


async def test_detect_accepts_rgba_and_grayscale(
    detector: EmbeddedDetector, tmp_path: Path
) -> None:
    """An RGBA PNG and a grayscale PNG are converted to RGB and detected."""
    with Image.open(photo("person-cameraman.jpg")) as original:
        rgba, gray = tmp_path / "rgba.png", tmp_path / "gray.png"
        original.convert("RGBA").save(rgba)
        original.convert("L").save(gray)
    for path in (rgba, gray):
        result = await detector.detect(path, "image")
        assert top(result, "person")[0] == pytest.approx(0.88, abs=CONFIDENCE_TOLERANCE)


async def test_detect_rejects_a_truncated_jpeg(detector: EmbeddedDetector, tmp_path: Path) -> None:
    """Half a JPEG is undecodable media."""
    truncated = tmp_path / "truncated.jpg"
    data = photo("person-astronaut.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UndecodableMediaError, match=r"truncated\.jpg"):
        await detector.detect(truncated, "image")


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_detect_rejects_random_bytes(
    detector: EmbeddedDetector, tmp_path: Path, kind: str
) -> None:
    """Random bytes are undecodable media, as an image and as a video."""
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(7).randbytes(4096))
    with pytest.raises(UndecodableMediaError):
        await detector.detect(noise, kind)


async def test_detect_rejects_a_missing_file(detector: EmbeddedDetector, tmp_path: Path) -> None:
    """A file that vanished before detection is undecodable media."""
    with pytest.raises(UndecodableMediaError, match="cannot be read"):
        await detector.detect(tmp_path / "gone.jpg", "image")


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (8_000, 8_000)],
    ids=["beyond-pillow-limit", "beyond-own-limit"],
)
async def test_detect_refuses_decompression_bombs(
    detector: EmbeddedDetector, tmp_path: Path, width: int, height: int
) -> None:
    """A tiny PNG declaring a huge size is refused before any pixel is decoded."""
    bomb = png_bomb(tmp_path / "bomb.png", width, height)
    assert bomb.stat().st_size < 200
    with pytest.raises(UndecodableMediaError, match="bomb"):
        await detector.detect(bomb, "image")


async def test_detect_honours_the_pixel_limit() -> None:
    """A real photo above a configured pixel limit is refused with the limit in the message."""
    embedded = EmbeddedDetector(max_image_pixels=100_000)
    with pytest.raises(UndecodableMediaError, match="100,000"):
        await embedded.detect(photo("person-astronaut.jpg"), "image")
    await embedded.aclose()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four seconds at 5 fps: two of an empty rocket launch, then two of the cameraman."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return write_video(
        path, [(photo("empty-rocket.jpg"), 2.0), (photo("person-cameraman.jpg"), 2.0)]
    )


async def test_detect_video_samples_one_frame_per_interval(
    detector: EmbeddedDetector, video: Path
) -> None:
    """A 4 s clip sampled every second gives 4 frames, and the person of the second half."""
    result = await detector.detect(video, "video")
    assert result.frames == 4
    assert (result.image_width, result.image_height) == (512, 384)
    assert top(result, "person")[0] > 0.5
    assert [obj.label for obj in result.objects].count("person") == 1


async def test_detect_video_records_the_frame_time_of_each_object(
    detector: EmbeddedDetector, video: Path
) -> None:
    """Each object of a video carries the time of the sampled frame it was seen in: the person
    appears after two seconds, in a frame sampled on the one-second grid."""
    result = await detector.detect(video, "video")
    person = next(obj for obj in result.objects if obj.label == "person")
    assert person.frame_seconds in (2.0, 3.0)
    assert all(obj.frame_seconds in (0.0, 1.0, 2.0, 3.0) for obj in result.objects)


async def test_detect_video_stops_at_max_frames(video: Path) -> None:
    """Sampling stops at max_frames; here the first two samples only see the rocket."""
    embedded = EmbeddedDetector(confidence_threshold=0.35, frame_interval_seconds=1.0, max_frames=2)
    try:
        result = await embedded.detect(video, "video")
    finally:
        await embedded.aclose()
    assert result.frames == 2
    assert "person" not in {obj.label for obj in result.objects}


@pytest.fixture
def truncated_video(video: Path, tmp_path: Path) -> Path:
    """The first kilobyte of the clip."""
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[:1024])
    return truncated


async def test_detect_video_rejects_a_truncated_clip(
    detector: EmbeddedDetector, truncated_video: Path
) -> None:
    """The first kilobyte of an MP4 is undecodable media."""
    truncated = truncated_video
    with pytest.raises(UndecodableMediaError, match=r"truncated\.mp4"):
        await detector.detect(truncated, "video")


async def test_detect_rejects_an_unknown_kind(detector: EmbeddedDetector) -> None:
    """Only "image" and "video" are media kinds."""
    with pytest.raises(ValueError, match="kind"):
        await detector.detect(photo("cat-chelsea.jpg"), "audio")


async def test_detect_after_aclose_fails_clearly() -> None:
    """A closed detector refuses to work instead of silently reloading."""
    embedded = EmbeddedDetector()
    await embedded.aclose()
    with pytest.raises(DetectorError, match="closed"):
        await embedded.detect(photo("cat-chelsea.jpg"), "image")

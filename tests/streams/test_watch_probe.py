"""Probing a file: complete decode and content hash, on real media files."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import av
import pytest
from PIL import Image

from streams.detectors.base import MediaKind
from streams.watch.containers import container_shortfall
from streams.watch.probe import Probe, probe_open
from tests.fakes.media import photo, png_bomb, write_video

PHOTO = photo("person-astronaut.jpg")


def probe_file(path: Path, kind: MediaKind, max_pixels: int) -> Probe:
    """Probe the file at `path` from an open handle, as the watcher does."""
    with path.open("rb") as handle:
        return probe_open(handle, path, kind, max_pixels)


def sha256_file(path: Path) -> tuple[str, int]:
    """The hex SHA-256 of a file and its size in bytes."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def test_probe_accepts_a_complete_jpeg() -> None:
    """A complete JPEG decodes; its hash and size are those of the whole file."""
    data = PHOTO.read_bytes()
    probe = probe_file(PHOTO, "image", 50_000_000)
    assert probe.decodable
    assert probe.sha256 == hashlib.sha256(data).hexdigest()
    assert probe.size == len(data)
    assert probe.mime == "image/jpeg"


def test_probe_reports_the_real_format_of_a_misnamed_png(tmp_path: Path) -> None:
    """A PNG saved under a .jpg name decodes and is reported as image/png."""
    path = tmp_path / "x.jpg"
    with Image.open(PHOTO) as opened:
        opened.save(path, format="PNG")
    probe = probe_file(path, "image", 50_000_000)
    assert probe.decodable
    assert probe.mime == "image/png"


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.999])
def test_probe_refuses_a_truncated_jpeg(tmp_path: Path, fraction: float) -> None:
    """A JPEG cut anywhere before its end marker does not count as decodable."""
    data = PHOTO.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * fraction)])
    probe = probe_file(path, "image", 50_000_000)
    assert not probe.decodable
    assert probe.error


def test_probe_refuses_a_png_without_its_end(tmp_path: Path) -> None:
    """A PNG missing its IEND chunk does not count as decodable."""
    buffer = io.BytesIO()
    with Image.open(PHOTO) as opened:
        opened.save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:-12])
    assert not probe_file(path, "image", 50_000_000).decodable


def test_probe_refuses_random_bytes_and_bombs(tmp_path: Path) -> None:
    """Random bytes named .jpg and a decompression bomb are not decodable."""
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(os.urandom(20_000))
    bomb = png_bomb(tmp_path / "bomb.png", 20_000, 20_000)
    assert not probe_file(noise, "image", 50_000_000).decodable
    assert not probe_file(bomb, "image", 50_000_000).decodable


def test_probe_accepts_a_video_and_refuses_a_cut_mp4(tmp_path: Path) -> None:
    """A complete clip opens with PyAV; an MP4 cut before its index does not."""
    clip = write_video(tmp_path / "clip.mp4", [(PHOTO, 0.6)])
    probe = probe_file(clip, "video", 50_000_000)
    assert probe.decodable
    assert (probe.sha256, probe.size) == sha256_file(clip)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:200])
    assert not probe_file(cut, "video", 50_000_000).decodable


def test_probe_raises_for_a_missing_file(tmp_path: Path) -> None:
    """A file that is gone raises FileNotFoundError (the watcher treats it as vanished)."""
    with pytest.raises(FileNotFoundError):
        probe_file(tmp_path / "gone.jpg", "image", 50_000_000)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One short clip per container the cameras upload."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        ext: write_video(folder / f"clip.{ext}", [(PHOTO, 0.4)]).read_bytes()
        for ext in ("mp4", "mov", "mkv", "avi")
    }


@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv", "avi"])
def test_container_of_a_complete_clip_is_whole(clips: dict[str, bytes], ext: str) -> None:
    """A finished clip declares no more bytes than it has."""
    data = clips[ext]
    assert container_shortfall(io.BytesIO(data), len(data)) is None


@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv", "avi"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_container_of_a_cut_clip_is_short(
    clips: dict[str, bytes], ext: str, fraction: float
) -> None:
    """A clip cut short declares more bytes than it has."""
    data = clips[ext][: int(len(clips[ext]) * fraction)]
    assert container_shortfall(io.BytesIO(data), len(data))


def test_container_with_open_size_cannot_be_judged() -> None:
    """A streamed Matroska (unknown Segment size) or unknown data is left to the stable size."""
    ebml = b"\x1a\x45\xdf\xa3" + b"\x84" + b"\x42\x86\x81\x01"
    streamed = ebml + b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff" + b"\x00" * 100
    assert container_shortfall(io.BytesIO(streamed), len(streamed)) is None
    assert container_shortfall(io.BytesIO(b"\x00" * 50), 50) is None


def test_probe_refuses_a_cut_avi_that_pyav_still_decodes(
    clips: dict[str, bytes], tmp_path: Path
) -> None:
    """A half-uploaded .avi is not decodable for the watcher even though PyAV decodes a frame."""
    path = tmp_path / "cut.avi"
    path.write_bytes(clips["avi"][: len(clips["avi"]) * 3 // 4])
    with av.open(str(path)) as container:
        assert next(container.decode(video=0), None) is not None
    probe = probe_file(path, "video", 50_000_000)
    assert not probe.decodable
    assert probe.error is not None
    assert "RIFF declares" in probe.error

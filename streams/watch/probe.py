"""Looking inside a file: does it decode completely, and what is its content hash.

Blocking: call from a worker thread. The hash and the decode of an image come from one read of
its bytes, so the published hash is the hash of the content that was found decodable.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image

from streams.detectors.base import MediaKind
from streams.detectors.images import check_pixels
from streams.watch.containers import container_shortfall

_CHUNK = 1 << 20
# A complete JPEG ends with EOI (FF D9), a PNG with its IEND chunk; some cameras pad a few bytes
# after them. Inside JPEG entropy-coded data an FF byte is always stuffed, so FF D9 near the end
# is the real end marker.
_TAIL = 64


@dataclass(frozen=True, slots=True)
class Probe:
    size: int  # bytes hashed (and decoded)
    sha256: str
    decodable: bool
    mime: str | None = None  # what the content is (images), when it decoded
    error: str | None = None  # why it did not decode


def probe_file(path: Path, kind: MediaKind, max_pixels: int) -> Probe:
    """Hash the file and check that it decodes completely.

    Images: Pillow decodes every pixel and a JPEG/PNG must end with its end marker. Videos: the
    container must be as long as it declares (`containers`) and PyAV must decode a frame.

    Raises `OSError` (e.g. `FileNotFoundError`) when the file cannot be read at all.
    """
    if kind == "image":
        return _probe_image(path, max_pixels)
    return _probe_video(path, max_pixels)


def sha256_file(path: Path) -> tuple[str, int]:
    """The hex SHA-256 of a file and its size in bytes, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _probe_image(path: Path, max_pixels: int) -> Probe:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            check_pixels(path, opened.width, opened.height, max_pixels)
            opened.load()
            image_format = opened.format
    except Exception as exc:  # Pillow raises many types for broken input; all mean "not yet"
        return Probe(len(data), sha, decodable=False, error=f"{type(exc).__name__}: {exc}")
    if not _has_end_marker(image_format, data):
        return Probe(len(data), sha, decodable=False, error=f"{image_format} end marker missing")
    mime = Image.MIME.get(image_format) if image_format else None
    return Probe(len(data), sha, decodable=True, mime=mime)


def _has_end_marker(image_format: str | None, data: bytes) -> bool:
    tail = data[-_TAIL:]
    if image_format == "JPEG":
        return b"\xff\xd9" in tail
    if image_format == "PNG":
        return b"IEND" in tail
    return True  # other formats: Pillow's full decode is the only check


def _probe_video(path: Path, max_pixels: int) -> Probe:
    sha, size = sha256_file(path)
    with path.open("rb") as handle:
        shortfall = container_shortfall(handle, size)
    if shortfall is not None:
        return Probe(size, sha, decodable=False, error=shortfall)
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                return Probe(size, sha, decodable=False, error="no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width and height:
                check_pixels(path, width, height, max_pixels)
            for _frame in container.decode(stream):
                return Probe(size, sha, decodable=True)
    except Exception as exc:  # PyAV raises FFmpeg, OS and value errors for broken input
        return Probe(size, sha, decodable=False, error=f"{type(exc).__name__}: {exc}")
    return Probe(size, sha, decodable=False, error="no decodable frame")

"""Looking inside a file: is it the camera root's own, does it decode completely, what is its hash.

Blocking: call from a worker thread. A probe reads one open file: `open_confined` opens it and
checks that the file opened is one of the camera root's own (no symlink swapped in since the path
was classified, no hard link), and the hash and the decode both come from that handle, so the
published hash is the hash of the content that was found decodable. An image is read whole, up
to its byte limit; a video is hashed in chunks and opened with the one demuxer its first bytes
name (FFmpeg never guesses the format of an upload).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image

from streams.detectors.base import MediaKind, UndecodableMediaError
from streams.detectors.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    IMAGE_FORMATS,
    check_pixels,
    read_limited,
)
from streams.media import SNIFF_BYTES, sniff_container
from streams.watch.candidates import IgnoreReason
from streams.watch.config import WatchError
from streams.watch.containers import container_shortfall

_CHUNK = 1 << 20
# A complete JPEG ends with EOI (FF D9), a PNG with its IEND chunk; some cameras pad a few bytes
# after them. Inside JPEG entropy-coded data an FF byte is always stuffed, so FF D9 near the end
# is the real end marker.
_TAIL = 64


class FileRefusedError(WatchError):
    """The file opened is not the camera root's own; `reason` says why. Never read."""

    def __init__(self, path: Path, reason: IgnoreReason, detail: str) -> None:
        super().__init__(
            f"{path.name}: {detail}; it is not read. Fix: put the camera's own files into its "
            "folder instead of links to files elsewhere"
        )
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Probe:
    size: int  # bytes hashed (and decoded)
    sha256: str
    decodable: bool
    mime: str | None = None  # what the content is (images), when it decoded
    error: str | None = None  # why it did not decode


def open_confined(path: Path, root: Path) -> BinaryIO:
    """Open `path` for reading once the file opened is known to be one of `root`'s own.

    Refused (`FileRefusedError`, the handle closed): a file that resolves outside `root` (a
    symlink, or a folder on the way, swapped in after the path was classified), a path that
    names another file by the time it is checked, anything but a regular file (a FIFO swapped
    in is opened without blocking, then refused), and a file with more than one hard link.
    Raises `OSError` when the file cannot be opened at all (e.g. `FileNotFoundError`).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    handle = os.fdopen(fd, "rb")
    try:
        _check_confined(handle, path, root)
    except BaseException:
        handle.close()
        raise
    return handle


def _check_confined(handle: BinaryIO, path: Path, root: Path) -> None:
    opened = os.fstat(handle.fileno())
    if not stat.S_ISREG(opened.st_mode):
        raise FileRefusedError(path, IgnoreReason.NOT_A_FILE, "is not a regular file")
    try:
        resolved = path.resolve(strict=True)
    except RuntimeError as exc:  # a symlink loop
        raise FileRefusedError(
            path, IgnoreReason.SYMLINK_OUTSIDE_ROOT, f"cannot be resolved ({exc})"
        ) from exc
    if not resolved.is_relative_to(root.resolve()):
        raise FileRefusedError(
            path, IgnoreReason.SYMLINK_OUTSIDE_ROOT, "resolves to a file outside the camera root"
        )
    named = os.stat(resolved)
    if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
        raise FileRefusedError(
            path, IgnoreReason.SYMLINK_OUTSIDE_ROOT, "named another file while it was opened"
        )
    links = os.fstat(handle.fileno()).st_nlink
    if links > 1:
        raise FileRefusedError(
            path,
            IgnoreReason.HARD_LINK,
            f"has {links} hard links, whose other names may lie outside the camera root",
        )


def probe_open(
    handle: BinaryIO,
    path: Path,
    kind: MediaKind,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Probe:
    """Hash the open file `handle` (found at `path`) and check that it decodes completely.

    Images: at most `max_bytes` are read; Pillow opens JPEG or PNG only, refuses more than
    `max_pixels` before decoding, decodes all of the data (a JPEG's at 1/8 scale: every block
    is read, the pixels are made by the detector), and the file must end with its end marker.
    Videos: the first bytes must name an MP4/MOV, Matroska or AVI container, which must be as
    long as it declares (`containers`), and PyAV must decode a frame.

    Raises `OSError` when the file cannot be read.
    """
    if kind == "image":
        return _probe_image(handle, path, max_pixels, max_bytes)
    return _probe_video(handle, path, max_pixels)


def _sha256_of(handle: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    handle.seek(0)
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _probe_image(handle: BinaryIO, path: Path, max_pixels: int, max_bytes: int) -> Probe:
    try:
        data = read_limited(handle, path, max_bytes)
    except UndecodableMediaError as exc:  # too large: never read whole
        return Probe(os.fstat(handle.fileno()).st_size, "", decodable=False, error=str(exc))
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
            check_pixels(path, opened.width, opened.height, max_pixels)
            if opened.format == "JPEG":
                # Every entropy-coded block is still read and checked (a truncated or corrupt
                # upload fails here as in a full decode), but the inverse DCT runs at 1/8 scale:
                # the pixels are made once, by the detector, not twice.
                opened.draft(opened.mode, (max(1, opened.width // 8), max(1, opened.height // 8)))
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


def _probe_video(handle: BinaryIO, path: Path, max_pixels: int) -> Probe:
    sha, size = _sha256_of(handle)
    handle.seek(0)
    demuxer = sniff_container(handle.read(SNIFF_BYTES))
    if demuxer is None:
        return Probe(size, sha, decodable=False, error="not an MP4/MOV, Matroska or AVI container")
    shortfall = container_shortfall(handle, size)
    if shortfall is not None:
        return Probe(size, sha, decodable=False, error=shortfall)
    handle.seek(0)
    try:
        with av.open(handle, mode="r", format=demuxer) as container:
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

"""Media files made on the fly for tests: short videos from photos, decompression-bomb PNGs."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from PIL import ExifTags, Image

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"


def photo(name: str) -> Path:
    """The path of a test photo, e.g. photo("cat-chelsea.jpg")."""
    return PHOTOS / name


def write_video(
    path: Path,
    scenes: Sequence[tuple[Path, float]],
    *,
    fps: int = 5,
    size: tuple[int, int] = (512, 384),
    codec: str = "libx264",
) -> Path:
    """Write an MP4 showing each photo for its number of seconds, in order."""
    with av.open(str(path), mode="w") as container:
        stream = cast(av.VideoStream, container.add_stream(codec, rate=fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        index = 0
        for source, seconds in scenes:
            with Image.open(source) as opened:
                picture = np.asarray(opened.convert("RGB").resize(size))
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = index
                index += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that declares `width`×`height` pixels (its data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def jpeg_with_exif(path: Path, source: Path, taken: str, offset: str | None = None) -> Path:
    """Re-save the photo `source` as a JPEG whose EXIF DateTimeOriginal is `taken`
    ("YYYY:MM:DD HH:MM:SS"), with OffsetTimeOriginal `offset` ("+02:00") when given."""
    exif = Image.Exif()
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[ExifTags.Base.DateTimeOriginal] = taken
    if offset is not None:
        ifd[ExifTags.Base.OffsetTimeOriginal] = offset
    with Image.open(source) as opened:
        opened.convert("RGB").save(path, format="JPEG", exif=exif)
    return path

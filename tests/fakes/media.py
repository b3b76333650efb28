"""Media files made on the fly for tests: short videos from photos, decompression bombs."""

from __future__ import annotations

import io
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


def png_bomb(
    path: Path, width: int, height: int, *, padding: int = 0, filled: bool = False
) -> Path:
    """A tiny PNG file that declares `width`×`height` pixels (its data is a few bytes), made
    `padding` bytes larger by a text chunk (to pass minimum-size checks). `filled`: its data
    really inflates to every (black) pixel, so that decoding it takes width×height×3 bytes of
    memory (the file stays ~1/250 of that)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + (chunk(b"tEXt", b"Comment\x00" + b"x" * padding) if padding else b"")
        + chunk(b"IDAT", _black_rows(width, height) if filled else zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def _black_rows(width: int, height: int) -> bytes:
    """The zlib stream of `height` PNG rows (filter byte + RGB) of zeros, compressed row by row."""
    row = b"\x00" * (1 + 3 * width)
    compressor = zlib.compressobj(1)
    return b"".join([compressor.compress(row) for _ in range(height)] + [compressor.flush()])


def jpeg_bomb(path: Path, width: int, height: int, *, padding: int = 0) -> Path:
    """A tiny JPEG file whose frame header (SOF0) declares `width`×`height` pixels (≤ 65535),
    made `padding` bytes larger by a comment (to pass minimum-size checks)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", comment=b"x" * padding)
    data = bytearray(buffer.getvalue())
    offset = 2  # after SOI; each segment: FF, marker, 2-byte length including itself
    while data[offset] == 0xFF and data[offset + 1] != 0xC0:
        (length,) = struct.unpack_from(">H", data, offset + 2)
        offset += 2 + length
    if data[offset + 1] != 0xC0:
        raise ValueError("no baseline frame header found")
    struct.pack_into(">HH", data, offset + 5, height, width)  # after length and precision
    path.write_bytes(bytes(data))
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

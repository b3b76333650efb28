"""Decoding still images with Pillow into upright RGB pictures, with a decompression-bomb guard.

Untrusted uploads meet only what cameras write: Pillow opens JPEG and PNG and nothing else (it
would otherwise try each of its dozens of format plugins, EPS handing the file to Ghostscript),
a file larger than the byte limit is refused without being read whole, and a picture declaring
more pixels than the pixel limit is refused before a pixel is decoded.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from streams.detectors.base import UndecodableMediaError

# 8K UHD is 33 Mpx; anything far beyond that from a camera is broken or hostile.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# An 8K JPEG is 10-20 MB; a lossless PNG of the pixel limit could be larger, a camera's never is.
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
# The formats Pillow may open for an upload (`Image.open(..., formats=IMAGE_FORMATS)`).
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG")


def check_bytes(path: Path, size: int, max_bytes: int) -> None:
    """Refuse a file of `size` bytes larger than `max_bytes` before reading it."""
    if size > max_bytes:
        raise UndecodableMediaError(
            f"{path.name}: is {size:,} bytes, more than the limit of {max_bytes:,} bytes for an "
            "image; it is not a camera picture. Fix: check what uploads into the camera folder, "
            "or raise the image size limit."
        )


def read_limited(handle: BinaryIO, path: Path, max_bytes: int) -> bytes:
    """All bytes of the open file `handle`, refusing one larger than `max_bytes` without
    reading more than `max_bytes + 1` bytes (even if it grows while being read)."""
    check_bytes(path, os.fstat(handle.fileno()).st_size, max_bytes)
    data = handle.read(max_bytes + 1)
    check_bytes(path, len(data), max_bytes)
    return data


def check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    """Refuse a picture whose declared size exceeds `max_pixels` before decoding it."""
    if width <= 0 or height <= 0:
        raise UndecodableMediaError(
            f"{path.name}: declares an empty size {width}x{height}; the file is corrupt. "
            "Fix: check the camera's upload."
        )
    if width * height > max_pixels:
        raise UndecodableMediaError(
            f"{path.name}: declares {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,}; this is a corrupt file or a decompression bomb. "
            "Fix: configure the camera for a smaller resolution, or raise the pixel limit."
        )


def decode_image(
    path: Path,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Image.Image:
    """Read the image at `path` as an upright (EXIF-oriented) RGB picture.

    Raises `UndecodableMediaError` for a missing, unreadable, truncated, oversized or non-JPEG/PNG
    file.
    """
    try:
        with path.open("rb") as handle:
            data = read_limited(handle, path, max_bytes)
    except OSError as exc:
        raise UndecodableMediaError(
            f"{path.name}: cannot be read ({exc.strerror or exc}); it was probably removed or "
            "its permissions are wrong. Fix: check the upload folder."
        ) from exc
    try:
        # Pillow's own bomb check runs inside `open`: an error above twice MAX_IMAGE_PIXELS, a
        # warning above it. A warning is only printed in production (then `check_pixels` refuses
        # the picture) and arrives as an exception where warnings are errors; either way no
        # pixel is decoded.
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
            check_pixels(path, opened.width, opened.height, max_pixels)
            opened.load()
            picture = _upright_rgb(opened)
    except UndecodableMediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UndecodableMediaError(
            f"{path.name}: refused by the decompression-bomb guard ({exc}); the declared size "
            "is absurd. Fix: configure the camera for a smaller resolution."
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UndecodableMediaError(
            f"{path.name}: not a decodable JPEG or PNG image ({exc}); the upload is probably "
            "truncated or not a camera picture. Fix: check the camera's upload settings; the "
            "file is skipped."
        ) from exc
    return picture


def _upright_rgb(image: Image.Image) -> Image.Image:
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa"):
        # Transparent areas become black, like the letterbox padding.
        with_alpha = upright.convert("RGBA")
        background = Image.new("RGB", with_alpha.size, (0, 0, 0))
        background.paste(with_alpha, mask=with_alpha.getchannel("A"))
        return background
    if upright.mode != "RGB":
        return upright.convert("RGB")
    return upright

"""Decoding still images with Pillow into upright RGB pictures, with a decompression-bomb guard.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

from streams.detectors.base import UndecodableMediaError

# 8K UHD is 33 Mpx; anything far beyond that from a camera is broken or hostile.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


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


def decode_image(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Read the image at `path` as an upright (EXIF-oriented) RGB picture.

    Raises `UndecodableMediaError` for a missing, unreadable, truncated or oversized file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UndecodableMediaError(
            f"{path.name}: cannot be read ({exc.strerror or exc}); it was probably removed or "
            "its permissions are wrong. Fix: check the upload folder."
        ) from exc
    try:
        # Pillow's own bomb check runs inside `open` (warning above MAX_IMAGE_PIXELS, error above
        # twice that); with warnings turned into errors the warning arrives as an exception too.
        with Image.open(io.BytesIO(data)) as opened:
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
            f"{path.name}: not a decodable image ({exc}); the upload is probably truncated or "
            "not an image. Fix: check the camera's upload settings; the file is skipped."
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

"""Thumbnails: the picture of a detection with every box of its detection result drawn on it,
the requested box highlighted, scaled down to a maximum width and cached as JPEG on disk.

Images are decoded as the detector saw them (upright, EXIF applied), so boxes land where the
detector put them. For a video the boxes are drawn on the sampled frame the object was seen in
(its `frame_seconds`), with the other objects of that frame; objects recorded without a frame
time are drawn on the first frame. Blocking: call `render_thumbnail_file()` from a worker thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from hsi.api.queries.detections import Box
from streams.detectors.frames import frame_at
from streams.detectors.images import decode_image
from streams.media import MediaKind, media_kind

HIGHLIGHT = (255, 0, 0)
OTHER = (255, 214, 0)


@dataclass(frozen=True)
class ThumbnailSpec:
    max_width: int = 640
    quality: int = 85


def line_width(image_width: int) -> int:
    return max(3, round(image_width / 200))


def scaled_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The thumbnail size: at most `max_width` wide, aspect kept, never enlarged."""
    if width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def box_rectangle(
    box: Box, source: tuple[int, int], target: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A box given in `source` pixels as an inclusive rectangle in `target` pixels, clipped."""
    sx, sy = target[0] / source[0], target[1] / source[1]
    left = max(0, round(box.x * sx))
    top = max(0, round(box.y * sy))
    right = min(target[0] - 1, round((box.x + box.width) * sx) - 1)
    bottom = min(target[1] - 1, round((box.y + box.height) * sy) - 1)
    return left, top, max(left, right), max(top, bottom)


def draw_boxes(
    picture: Image.Image, boxes: Sequence[Box], source: tuple[int, int], max_width: int
) -> Image.Image:
    """`picture` scaled to `max_width`, with `boxes` (in `source` coordinates) drawn on it; the
    highlighted box last, so it stays on top where boxes overlap."""
    size = scaled_size(picture.width, picture.height, max_width)
    canvas = picture.convert("RGB")
    if size != canvas.size:
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(canvas)
    width = line_width(size[0])
    for box in sorted(boxes, key=lambda b: b.highlighted):
        colour = HIGHLIGHT if box.highlighted else OTHER
        draw.rectangle(box_rectangle(box, source, size), outline=colour, width=width)
    return canvas


def load_picture(path: Path, frame_seconds: float | None = None) -> Image.Image:
    """The upright picture of an image, or a video's frame at `frame_seconds` (default: its
    first frame)."""
    if media_kind(path) is MediaKind.VIDEO:
        return frame_at(path, frame_seconds or 0.0)
    return decode_image(path)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def render_thumbnail_file(
    source: Path,
    boxes: Sequence[Box],
    box_space: tuple[int, int],
    target: Path,
    spec: ThumbnailSpec,
    frame_seconds: float | None = None,
) -> None:
    """Render the thumbnail of `source` into `target` (JPEG, 4:4:4 so thin boxes keep colour).

    `box_space` is the image size the boxes refer to; when unknown (0), the picture's own.
    `frame_seconds`: a video's frame to draw on (default: its first).
    """
    picture = load_picture(source, frame_seconds)
    space = box_space if box_space[0] > 0 and box_space[1] > 0 else picture.size
    canvas = draw_boxes(picture, boxes, space, spec.max_width)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=spec.quality, subsampling=0, optimize=True)
    write_atomically(target, buffer.getvalue())

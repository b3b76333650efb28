"""The e-mail's picture: the event's first detection with its boxes drawn, as JPEG bytes.

The query API renders thumbnails the same way (`hsi.api.thumbnails`), which the write side may
not import; this is the small write-side twin. The picture is decoded as the detector saw it
(upright, EXIF applied; a video's first frame), so the boxes land where they were found. A file
that is gone, leaves the camera root or does not decode gives no picture: the alert goes
without it. Blocking: call from a worker thread.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from streams.detectors.base import UndecodableMediaError
from streams.detectors.frames import sample_frames
from streams.detectors.images import decode_image
from streams.media import MediaKind, media_kind
from streams.paths import PathOutsideRootError, confine
from streams.schemas import Box

logger = logging.getLogger("hsi.notify")

BOX_COLOUR = (255, 214, 0)


def _picture(path: Path) -> Image.Image:
    if media_kind(path) is MediaKind.VIDEO:
        return sample_frames(path, interval_seconds=3600.0, max_frames=1)[0]
    return decode_image(path)


def draw(picture: Image.Image, boxes: Sequence[Box], max_width: int) -> Image.Image:
    """`picture` scaled down to `max_width` (never up) with `boxes` (in its own pixels) drawn."""
    canvas = picture.convert("RGB")
    scale = 1.0
    if canvas.width > max_width:
        scale = max_width / canvas.width
        size = (max_width, max(1, round(canvas.height * scale)))
        canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(canvas.width / 200))
    for box in boxes:
        left = max(0, round(box.x * scale))
        top = max(0, round(box.y * scale))
        right = min(canvas.width - 1, max(left, round((box.x + box.width) * scale) - 1))
        bottom = min(canvas.height - 1, max(top, round((box.y + box.height) * scale) - 1))
        pen.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=width)
    return canvas


def render_snapshot(
    camera_root: Path, relative: str, boxes: Sequence[Box], max_width: int = 1280
) -> bytes | None:
    """The JPEG of `relative` (under `camera_root`) with `boxes`; None when there is none."""
    try:
        path = confine(camera_root, relative)
        canvas = draw(_picture(path), boxes, max_width)
    except (PathOutsideRootError, UndecodableMediaError, OSError) as exc:
        logger.info(
            "notify.snapshot_missing",
            extra={"path": relative, "error": f"{type(exc).__name__}: {exc}"},
        )
        return None
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()

"""Sampling still frames from a video with PyAV, shared by every detector backend.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from streams.detectors.base import UndecodableMediaError
from streams.detectors.images import DEFAULT_MAX_IMAGE_PIXELS, check_pixels
from streams.media import SNIFF_BYTES, sniff_container

_EPSILON = 1e-6  # seconds; absorbs rounding of frame timestamps


def next_sample_time(start: float, interval_seconds: float, now: float) -> float:
    """The next sampling time after a frame taken at `now`, on the grid start + k·interval."""
    steps = math.floor((now - start) / interval_seconds + _EPSILON) + 1
    return start + steps * interval_seconds


def sample_frames(
    path: Path,
    interval_seconds: float,
    max_frames: int,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Image.Image]:
    """Decode the first video stream of `path`, keeping one RGB frame every `interval_seconds`.

    The first frame is always kept, then the first frame at or after each multiple of the
    interval from it, up to `max_frames` frames. Decoding stops early once enough frames are
    kept. A stream that breaks after some frames were kept yields those frames (a partially
    uploaded clip still shows something); one that yields none raises `UndecodableMediaError`.
    Only MP4/MOV, Matroska and AVI files are opened, each with its own demuxer (by its first
    bytes). Rotation metadata is not applied.
    """
    if interval_seconds <= 0:
        raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        # The demuxer the first bytes name, so that FFmpeg never guesses the format of an upload.
        container = av.open(str(path), mode="r", format=_demuxer(path, head))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _undecodable(path, exc) from exc
    frames: list[Image.Image] = []
    try:
        with container:
            if not container.streams.video:
                raise UndecodableMediaError(
                    f"{path.name}: contains no video stream; it is probably audio-only or not a "
                    "video. Fix: check the camera's recording settings; the file is skipped."
                )
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            width, height = stream.codec_context.width, stream.codec_context.height
            if width and height:
                check_pixels(path, width, height, max_pixels)
            start: float | None = None
            next_at = 0.0
            for index, frame in enumerate(container.decode(stream)):
                at = _frame_time(frame.time, index, stream.average_rate)
                if start is None:
                    start = next_at = at
                if at + _EPSILON < next_at:
                    continue
                check_pixels(path, frame.width, frame.height, max_pixels)
                picture: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
                frames.append(picture)
                if len(frames) >= max_frames:
                    break
                next_at = next_sample_time(start, interval_seconds, at)
    except UndecodableMediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        if not frames:
            raise _undecodable(path, exc) from exc
    if not frames:
        raise UndecodableMediaError(
            f"{path.name}: the video has no decodable frame; the upload is probably empty or "
            "truncated. Fix: check the camera's upload settings; the file is skipped."
        )
    return frames


def _frame_time(time: float | None, index: int, rate: Fraction | None) -> float:
    """A frame's time in seconds; from its index and the stream's rate when it has no time."""
    if time is not None:
        return float(time)
    fps = float(rate) if rate else 0.0
    return index / fps if fps > 0 else float(index)


def _demuxer(path: Path, head: bytes) -> str:
    demuxer = sniff_container(head)
    if demuxer is None:
        raise UndecodableMediaError(
            f"{path.name}: is not an MP4/MOV, Matroska or AVI video (its first bytes are "
            f"{head[:8]!r}); the upload is probably not a video. Fix: check the camera's upload "
            "settings; the file is skipped."
        )
    return demuxer


def _undecodable(path: Path, exc: BaseException) -> UndecodableMediaError:
    return UndecodableMediaError(
        f"{path.name}: not a decodable video ({exc}); the upload is probably truncated, still "
        "being written, or not a video. Fix: check the camera's upload settings; the file is "
        "skipped."
    )

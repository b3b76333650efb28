"""Sampling still frames from a video with PyAV, shared by every detector backend.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from streams.detectors.base import UndecodableMediaError
from streams.detectors.images import DEFAULT_MAX_IMAGE_PIXELS, check_pixels
from streams.media import SNIFF_BYTES, sniff_container

_EPSILON = 1e-6  # seconds; absorbs rounding of frame timestamps
FRAME_TIME_DIGITS = 3  # a sampled frame's time is recorded to the millisecond


def next_sample_time(start: float, interval_seconds: float, now: float) -> float:
    """The next sampling time after a frame taken at `now`, on the grid start + k·interval."""
    steps = math.floor((now - start) / interval_seconds + _EPSILON) + 1
    return start + steps * interval_seconds


@dataclass(frozen=True, slots=True)
class SampledFrame:
    """A frame kept from a video, and its time in seconds from the video's first frame
    (milliseconds, as `recorded_seconds` rounds it: what a video player seeks to)."""

    seconds: float
    picture: Image.Image


def recorded_seconds(at: float) -> float:
    """A frame's time (seconds from the first frame) as it is recorded: to the millisecond."""
    return round(at, FRAME_TIME_DIGITS)


def sample_frames(
    path: Path,
    interval_seconds: float,
    max_frames: int,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Image.Image]:
    """The pictures of `sample_video`."""
    return [frame.picture for frame in sample_video(path, interval_seconds, max_frames, max_pixels)]


def sample_video(
    path: Path,
    interval_seconds: float,
    max_frames: int,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[SampledFrame]:
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
    frames: list[SampledFrame] = []
    try:
        with contextlib.closing(_decoded(path, max_pixels)) as decoded:
            next_at = 0.0
            for at, frame in decoded:
                if at + _EPSILON < next_at:
                    continue
                check_pixels(path, frame.width, frame.height, max_pixels)
                picture: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
                frames.append(SampledFrame(recorded_seconds(at), picture))
                if len(frames) >= max_frames:
                    break
                next_at = next_sample_time(0.0, interval_seconds, at)
    except UndecodableMediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        if not frames:
            raise _undecodable(path, exc) from exc
    if not frames:
        raise _no_frame(path)
    return frames


def frame_at(path: Path, seconds: float, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """The frame `sample_video` kept at `seconds` (the first frame whose recorded time is at or
    after it); the last frame if the video is shorter, as a broken stream's last good frame."""
    last: av.VideoFrame | None = None
    try:
        with contextlib.closing(_decoded(path, max_pixels)) as decoded:
            for at, frame in decoded:
                last = frame
                if recorded_seconds(at) >= seconds:
                    break
    except UndecodableMediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        if last is None:
            raise _undecodable(path, exc) from exc
    if last is None:
        raise _no_frame(path)
    check_pixels(path, last.width, last.height, max_pixels)
    picture: Image.Image = last.to_image()  # type: ignore[no-untyped-call]
    return picture


def _decoded(path: Path, max_pixels: int) -> Generator[tuple[float, av.VideoFrame]]:
    """Every frame of the first video stream, with its time in seconds from the first frame.

    Raises `UndecodableMediaError` for a file that is no video; FFmpeg's errors pass through.
    """
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    # The demuxer the first bytes name, so that FFmpeg never guesses the format of an upload.
    container = av.open(str(path), mode="r", format=_demuxer(path, head))
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
        for index, frame in enumerate(container.decode(stream)):
            at = _frame_time(frame.time, index, stream.average_rate)
            if start is None:
                start = at
            yield at - start, frame


def _no_frame(path: Path) -> UndecodableMediaError:
    return UndecodableMediaError(
        f"{path.name}: the video has no decodable frame; the upload is probably empty or "
        "truncated. Fix: check the camera's upload settings; the file is skipped."
    )


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

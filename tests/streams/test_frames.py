"""Sampling video frames with their times, and finding a sampled frame again by its time."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageStat

from streams.detectors.base import UndecodableMediaError
from streams.detectors.frames import frame_at, recorded_seconds, sample_video
from tests.fakes.media import write_video


def _plain(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (320, 240), colour).save(path)
    return path


def _brightness(picture: Image.Image) -> float:
    return float(ImageStat.Stat(picture.convert("L")).mean[0])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds at 5 fps: one black second, then two white ones."""
    folder = tmp_path_factory.mktemp("frames")
    black = _plain(folder / "black.png", (0, 0, 0))
    white = _plain(folder / "white.png", (255, 255, 255))
    return write_video(folder / "clip.mp4", [(black, 1.0), (white, 2.0)], size=(320, 240))


def test_sample_video_gives_each_frame_its_time(clip: Path) -> None:
    """Frames are kept on the interval grid, each with its time from the first frame."""
    sampled = sample_video(clip, interval_seconds=1.0, max_frames=10)
    assert [frame.seconds for frame in sampled] == [0.0, 1.0, 2.0]
    assert [_brightness(frame.picture) > 128 for frame in sampled] == [False, True, True]


def test_frame_at_finds_the_sampled_frame_again(clip: Path) -> None:
    """`frame_at` returns the frame sampled at a time: the same picture as when sampling."""
    for frame in sample_video(clip, interval_seconds=0.4, max_frames=10):
        again = frame_at(clip, frame.seconds)
        assert again.size == frame.picture.size
        assert abs(_brightness(again) - _brightness(frame.picture)) < 1.0


def test_frame_at_past_the_end_is_the_last_frame(clip: Path) -> None:
    """A time after the clip's end (a clip cut short) gives its last frame."""
    assert _brightness(frame_at(clip, 60.0)) > 128


def test_frame_at_refuses_what_is_not_a_video(tmp_path: Path) -> None:
    """A file that is no video is undecodable media, as when sampling."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 2048)
    with pytest.raises(UndecodableMediaError):
        frame_at(broken, 0.0)


@pytest.mark.parametrize(
    ("at", "recorded"), [(0.0, 0.0), (0.0333667, 0.033), (0.0666, 0.067), (12.3456, 12.346)]
)
def test_recorded_seconds_keep_milliseconds(at: float, recorded: float) -> None:
    """A frame time is recorded to the millisecond."""
    assert recorded_seconds(at) == recorded

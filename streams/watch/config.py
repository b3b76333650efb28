"""The watch stage's settings as one frozen config, and the stage's errors."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

from streams.detectors.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS

SECONDS_PER_DAY = 86_400.0
# An hour of 4K H.265 at 8 Mbit/s is 3.6 GB; a camera clip is far smaller.
DEFAULT_MAX_VIDEO_BYTES = 4 * 1024**3


class WatchError(Exception):
    """Base error of `streams.watch`; the message says what happened, why, and the fix."""


class WatchConfigError(WatchError, ValueError):
    """The watch settings cannot be used."""


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """How the watcher decides that an upload is complete and new.

    - `polling`: use watchdog's `PollingObserver` (network shares, where inotify sees nothing)
      every `poll_interval` seconds instead of inotify.
    - `stable_seconds`: the size and mtime must stay unchanged this long before a file is
      decoded; `incomplete_timeout_seconds`: a file that stops growing and still cannot be
      decoded (or stays below the minimum size) for this long is corrupt.
    - `min_image_bytes` / `min_video_bytes`: smaller files are waited for, then corrupt.
    - `max_image_bytes` / `max_video_bytes`: larger files are refused once they stop growing,
      without being read (an image is read whole into memory to be decoded; a video is hashed
      in chunks, but hashing gigabytes of junk would hold a worker for minutes).
    - `dedupe_ttl_seconds`: how long a content hash is remembered per camera.
    - `scan_max_age_seconds`: the start-up scan skips files last modified longer ago than this
      (None: `dedupe_ttl_seconds`, so that a restart never re-publishes files whose dedupe
      marker has expired; `Watcher.ingest` has no age limit).
    - `timezone`: the zone of the naive local times in camera file names and EXIF.
    - `max_image_pixels`: larger images are refused (decompression-bomb guard).
    - `debounce_seconds`: quiet time after a file-system event before the file is looked at;
      `close_debounce_seconds`: after an inotify close event instead (None: `debounce_seconds`).
      A closed file that decodes completely is ready without waiting `stable_seconds`.
    - `workers`: files probed (decoded and hashed) at once; `scan_concurrency`: files in flight
      at once during the start-up scan and `ingest`.
    """

    polling: bool = False
    poll_interval: float = 2.0
    stable_seconds: float = 2.0
    incomplete_timeout_seconds: float = 60.0
    min_image_bytes: int = 256
    min_video_bytes: int = 1024
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    dedupe_ttl_seconds: float = 30 * SECONDS_PER_DAY
    scan_max_age_seconds: float | None = None
    timezone: str = "UTC"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    debounce_seconds: float = 0.05
    close_debounce_seconds: float | None = None
    workers: int = 4
    scan_concurrency: int = 64

    def __post_init__(self) -> None:
        positive = {
            "poll_interval": self.poll_interval,
            "stable_seconds": self.stable_seconds,
            "dedupe_ttl_seconds": self.dedupe_ttl_seconds,
            "max_image_pixels": self.max_image_pixels,
            "max_image_bytes": self.max_image_bytes,
            "max_video_bytes": self.max_video_bytes,
            "workers": self.workers,
            "scan_concurrency": self.scan_concurrency,
        }
        for name, value in positive.items():
            if value <= 0:
                raise WatchConfigError(f"watch {name} must be > 0, got {value}; fix the setting")
        non_negative = {
            "min_image_bytes": self.min_image_bytes,
            "min_video_bytes": self.min_video_bytes,
            "debounce_seconds": self.debounce_seconds,
            "close_debounce_seconds": self.close_debounce_seconds or 0.0,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise WatchConfigError(f"watch {name} must be >= 0, got {value}; fix the setting")
        for kind, smallest, largest in (
            ("image", self.min_image_bytes, self.max_image_bytes),
            ("video", self.min_video_bytes, self.max_video_bytes),
        ):
            if largest < smallest:
                raise WatchConfigError(
                    f"watch max_{kind}_bytes ({largest}) is below min_{kind}_bytes ({smallest}): "
                    f"every {kind} would be refused. Fix: raise the maximum or lower the minimum"
                )
        if self.incomplete_timeout_seconds < self.stable_seconds:
            raise WatchConfigError(
                f"watch incomplete_timeout_seconds ({self.incomplete_timeout_seconds}) is shorter "
                f"than stable_seconds ({self.stable_seconds}): no file could ever be judged "
                "corrupt fairly. Fix: make the timeout at least as long as the stable time"
            )
        if self.scan_max_age_seconds is not None and self.scan_max_age_seconds <= 0:
            raise WatchConfigError(
                f"watch scan_max_age_seconds must be > 0 or unset, got {self.scan_max_age_seconds}"
            )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise WatchConfigError(
                f"watch timezone {self.timezone!r} is not a known IANA zone name; use a name "
                "such as 'Europe/Berlin' or 'UTC' (install tzdata if the system has none)"
            ) from exc

    @property
    def dedupe_ttl(self) -> int:
        """The dedupe TTL in whole seconds for `SET ... EX` (at least 1)."""
        return max(1, round(self.dedupe_ttl_seconds))

    @property
    def close_debounce(self) -> float:
        """Seconds: the quiet time after a close event."""
        if self.close_debounce_seconds is None:
            return self.debounce_seconds
        return self.close_debounce_seconds

    @property
    def scan_max_age(self) -> float:
        """Seconds: the start-up scan's age limit."""
        if self.scan_max_age_seconds is None:
            return self.dedupe_ttl_seconds
        return self.scan_max_age_seconds

"""Settings → the watcher, for `hsi up`, `hsi watch` and `hsi ingest`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hsi.infra.redis import RedisClient
from hsi.settings import components
from streams.watch.config import WatchConfig, WatchError
from streams.watch.watcher import Watcher

if TYPE_CHECKING:
    from hsi.settings.model import Settings

__all__ = ["WatchError", "build_watcher", "watch_config"]

# A file its writer closed (inotify) is looked at once: the close says the upload is done, and
# one that does not decode completely still waits WATCH_STABLE_SECONDS like an open one.
CLOSE_DEBOUNCE_SECONDS = 0.0


def watch_config(settings: Settings) -> WatchConfig:
    zone = components.local_zone(settings)
    return WatchConfig(
        polling=settings.watch_polling,
        poll_interval=settings.watch_poll_interval_seconds,
        stable_seconds=settings.watch_stable_seconds,
        incomplete_timeout_seconds=settings.watch_incomplete_timeout_seconds,
        min_image_bytes=settings.min_image_size_bytes,
        min_video_bytes=settings.min_video_size_bytes,
        max_image_bytes=settings.max_image_size_bytes,
        max_video_bytes=settings.max_video_size_bytes,
        dedupe_ttl_seconds=settings.dedupe_ttl,
        timezone=zone if isinstance(zone, str) else _zone_name(zone),
        close_debounce_seconds=CLOSE_DEBOUNCE_SECONDS,
    )


def _zone_name(zone: object) -> str:
    """A name zoneinfo understands for the local zone, else UTC."""
    key = getattr(zone, "key", None)
    if isinstance(key, str):
        return key
    try:
        from pathlib import Path

        link = Path("/etc/localtime").resolve()
        if "zoneinfo" in link.parts:
            return "/".join(link.parts[link.parts.index("zoneinfo") + 1 :])
    except OSError:
        pass
    return "UTC"


def build_watcher(settings: Settings, redis: RedisClient) -> Watcher:
    return Watcher(
        redis, components.stream_names(settings), settings.camera_root, watch_config(settings)
    )

"""The API's frozen configuration, mapped from `Settings` by
`hsi.settings.components.api_config()`.

Tests build `APIConfig` directly; every field except the two URLs has the settings' default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from hsi.infra.redis import RedisConfig
from streams.severity import SeverityThresholds

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class RateLimits:
    """Token buckets per client IP (requests per minute; a full bucket allows a burst of that
    many) and the live-feed connection caps."""

    enabled: bool = True
    requests_per_minute: int = 600
    media_requests_per_minute: int = 1200
    live_connections_per_client: int = 5
    live_max_connections: int = 100


@dataclass(frozen=True)
class LiveConfig:
    """The Server-Sent Events feed: heartbeat comment interval, how long a connection may stay
    without a delivered event, and the longest blocking XREAD (capped by the heartbeat)."""

    heartbeat_seconds: float = 15.0
    idle_timeout_seconds: float = 3600.0
    block_seconds: float = 5.0
    read_count: int = 100

    @property
    def block_ms(self) -> int:
        return max(1, int(min(self.block_seconds, self.heartbeat_seconds) * 1000))


@dataclass(frozen=True)
class APIConfig:
    database_url: str
    redis: RedisConfig
    database_schema: str | None = None  # a pinned search_path (tests use one schema each)
    stream_prefix: str = "hsi"
    camera_root: Path = Path(".hsi/cameras")
    data_dir: Path = Path(".hsi")
    thumbnail_max_width: int = 640
    thumbnail_jpeg_quality: int = 85
    severity: SeverityThresholds = field(default_factory=SeverityThresholds)
    api_key_enabled: bool = False
    api_keys: tuple[SecretStr, ...] = ()
    metrics_open: bool = False  # /metrics without the key (API_METRICS_OPEN)
    # proxies whose X-Forwarded-For/-Proto and X-Request-ID are believed (FORWARDED_ALLOW_IPS)
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    cors_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)
    live: LiveConfig = field(default_factory=LiveConfig)
    # /ready answers 503 once the projector is this many entries behind (lag + pending).
    ready_max_projector_lag: int = 10_000
    # A camera whose latest upload was taken more than this after it arrived has a fast clock
    # (BATCH_CLOCK_TOLERANCE_SECONDS: its files are batched by arrival time).
    clock_tolerance_seconds: float = 300.0
    thumbnail_concurrency: int = 2  # thumbnails rendered at once; more requests wait
    export_max_mb: int = 2048  # an evidence export larger than this (original files) is a 413
    export_picture_max_width: int = 1920
    timezone: tzinfo = UTC  # local times of an evidence export (TIMEZONE)
    # The text search configuration of `GET /api/events?q=` (SEARCH_LANGUAGE).
    search_language: str = "english"

    def __post_init__(self) -> None:
        if self.api_key_enabled and not any(k.get_secret_value() for k in self.api_keys):
            raise ValueError("api_key_enabled needs at least one non-empty key in api_keys")

    @property
    def thumbnail_dir(self) -> Path:
        return self.data_dir / "thumbnails"

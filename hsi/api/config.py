"""The API's frozen configuration, mapped from `Settings` by `APIConfig.from_settings()`.

Tests build `APIConfig` directly; every field except the two URLs has the settings' default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from hsi.infra.redis import RedisConfig
from streams.severity import SeverityThresholds

if TYPE_CHECKING:
    from hsi.settings.model import Settings


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
    cors_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)
    live: LiveConfig = field(default_factory=LiveConfig)
    # /ready answers 503 once the projector is this many entries behind (lag + pending).
    ready_max_projector_lag: int = 10_000

    def __post_init__(self) -> None:
        if self.api_key_enabled and not any(k.get_secret_value() for k in self.api_keys):
            raise ValueError("api_key_enabled needs at least one non-empty key in api_keys")

    @property
    def thumbnail_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, database_url: str, redis: RedisConfig
    ) -> APIConfig:
        return cls(
            database_url=database_url,
            redis=redis,
            stream_prefix=settings.stream_prefix,
            camera_root=settings.camera_root,
            data_dir=settings.data_dir,
            thumbnail_max_width=settings.thumbnail_max_width,
            thumbnail_jpeg_quality=settings.thumbnail_jpeg_quality,
            severity=SeverityThresholds(
                settings.severity_low_max, settings.severity_medium_max, settings.severity_high_max
            ),
            api_key_enabled=settings.api_key_enabled,
            api_keys=tuple(settings.api_keys),
            cors_origins=tuple(settings.cors_origins),
            cors_allow_credentials=settings.cors_allow_credentials,
            rate_limits=RateLimits(
                enabled=settings.rate_limit_enabled,
                requests_per_minute=settings.rate_limit_requests_per_minute,
                media_requests_per_minute=settings.rate_limit_media_requests_per_minute,
                live_connections_per_client=settings.rate_limit_live_connections_per_client,
                live_max_connections=settings.live_max_connections,
            ),
            live=LiveConfig(
                heartbeat_seconds=settings.live_heartbeat_seconds,
                idle_timeout_seconds=settings.live_idle_timeout_seconds,
            ),
        )

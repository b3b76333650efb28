"""Redis client factory and health check.

Connection retries use redis-py's own `Retry` with exponential backoff and jitter, so every
command (not only the first connect) rides out a short outage. HSI needs Redis ≥ 6.2 for
`XAUTOCLAIM`; `check_server()` refuses older servers with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from hsi.config import Settings

MIN_REDIS_VERSION = (6, 2, 0)


class RedisUnavailableError(RuntimeError):
    """Redis could not be reached or is unfit for HSI."""


@dataclass(frozen=True)
class RedisConfig:
    url: str
    max_connections: int = 64
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    health_check_interval: int = 30
    retry_attempts: int = 5
    backoff_base: float = 0.05
    backoff_cap: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings, url: str) -> RedisConfig:
        return cls(
            url=url,
            max_connections=settings.redis_max_connections,
            socket_timeout=settings.redis_socket_timeout_seconds,
            connect_timeout=settings.redis_connect_timeout_seconds,
            health_check_interval=settings.redis_health_check_interval_seconds,
            retry_attempts=settings.redis_retry_attempts,
            backoff_base=settings.redis_retry_backoff_base_seconds,
            backoff_cap=settings.redis_retry_backoff_cap_seconds,
        )


def create_redis(config: RedisConfig, *, decode_responses: bool = False) -> Redis:
    """A pooled asyncio client; the caller owns it and closes it with `aclose()`."""
    retry = Retry(
        ExponentialWithJitterBackoff(cap=config.backoff_cap, base=config.backoff_base),
        config.retry_attempts,
    )
    return Redis.from_url(
        config.url,
        max_connections=config.max_connections,
        socket_timeout=config.socket_timeout,
        socket_connect_timeout=config.connect_timeout,
        health_check_interval=config.health_check_interval,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError, OSError],
        decode_responses=decode_responses,
    )


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def ensure_supported(redis_version: str) -> None:
    """Refuse a server older than 6.2 (no XAUTOCLAIM)."""
    if parse_version(redis_version) < MIN_REDIS_VERSION:
        raise RedisUnavailableError(
            f"Redis {redis_version} is too old: HSI needs 6.2 or newer for XAUTOCLAIM. "
            "Upgrade the server or unset REDIS_URL to use the embedded one."
        )


@dataclass(frozen=True)
class RedisHealth:
    version: str
    server: str  # "redis" or "valkey"
    mode: str  # "standalone" or "cluster"
    append_only: bool  # False: a restart of the server may lose recent entries


async def check_server(client: Redis) -> RedisHealth:
    """Ping the server and return its version; refuse servers without XAUTOCLAIM."""
    try:
        info = await client.info("server")
        persistence = await client.info("persistence")
    except RedisError as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis: {exc}. Is the server running and REDIS_URL right? "
            "(unset REDIS_URL to use the embedded server)"
        ) from exc
    server = "valkey" if "valkey_version" in info else "redis"
    version = str(info.get("valkey_version") if server == "valkey" else info.get("redis_version"))
    ensure_supported(str(info.get("redis_version", version)))
    return RedisHealth(
        version=version,
        server=server,
        mode=str(info.get("redis_mode", "standalone")),
        append_only=int(persistence.get("aof_enabled", 0)) == 1,
    )

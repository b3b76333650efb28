"""Redis client factory and health check against real servers."""

from __future__ import annotations

import socket

import pytest
from redis.asyncio import Redis

from hsi.infra.redis import (
    RedisConfig,
    RedisUnavailableError,
    check_server,
    create_redis,
    ensure_supported,
    parse_version,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_reports_version(redis_client: Redis) -> None:
    """A real server answers with a version HSI supports."""
    health = await check_server(redis_client)
    assert parse_version(health.version) >= (6, 2, 0)
    assert health.server in {"redis", "valkey"}


async def test_client_round_trip(redis_client: Redis, key_prefix: str) -> None:
    """The factory's client speaks to the server (streams included)."""
    entry_id = await redis_client.xadd(f"{key_prefix}:s", {"k": "v"})
    assert await redis_client.xlen(f"{key_prefix}:s") == 1
    assert entry_id


async def test_closed_port_gives_clear_error_after_retries() -> None:
    """A server that is not there ends, after the configured retries, in a clear error."""
    client = create_redis(
        RedisConfig(
            url=f"redis://127.0.0.1:{_closed_port()}/0",
            retry_attempts=3,
            backoff_base=0.01,
            backoff_cap=0.05,
            connect_timeout=0.5,
        )
    )
    try:
        with pytest.raises(RedisUnavailableError, match="REDIS_URL"):
            await check_server(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("version", "supported"),
    [("6.2.0", True), ("7.0.15", True), ("7.2.4", True), ("6.0.16", False), ("5.0.7", False)],
)
def test_version_gate(version: str, supported: bool) -> None:
    """Servers older than 6.2 are refused with a message that names XAUTOCLAIM."""
    if supported:
        ensure_supported(version)
    else:
        with pytest.raises(RedisUnavailableError, match="XAUTOCLAIM"):
            ensure_supported(version)

"""Redis client factory and health check, for a single server or a Redis Cluster.

Connection retries use redis-py's own `Retry` with exponential backoff and jitter, so every
command (not only the first connect) rides out a short outage. HSI needs Redis ≥ 6.2 for
`XAUTOCLAIM`; `check_server()` refuses older servers with a clear message.

With `RedisConfig.cluster` the factory returns a `RedisCluster` client with the same timeouts,
pool size (per node) and retry policy. HSI's write side is cluster-safe by construction: every
per-camera key carries the camera's hash tag, each command names one key (or keys of one slot),
and every MULTI (WATCH included) keeps to the keys of one camera, hence one slot
(`streams.stages.outcome.transaction`). The Lua script of the watcher is in one slot too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    pass

MIN_REDIS_VERSION = (6, 2, 0)

# What `create_redis` returns: one server, or a cluster spoken to through the same command API.
RedisClient: TypeAlias = Redis | RedisCluster
log = logging.getLogger("hsi.redis")


class RedisUnavailableError(RuntimeError):
    """Redis could not be reached or is unfit for HSI."""


@dataclass(frozen=True)
class RedisConfig:
    url: str
    cluster: bool = False  # speak the Redis Cluster protocol; `url` names any one node
    max_connections: int = 64  # per server (per node on a cluster)
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    health_check_interval: int = 30
    retry_attempts: int = 5
    backoff_base: float = 0.05
    backoff_cap: float = 2.0


_RETRY_ON = [RedisConnectionError, RedisTimeoutError, ConnectionError, OSError]


def create_redis(config: RedisConfig, *, decode_responses: bool = False) -> RedisClient:
    """A pooled asyncio client (a `RedisCluster` when `config.cluster`); the caller owns it and
    closes it with `aclose()`."""
    retry = Retry(
        ExponentialWithJitterBackoff(cap=config.backoff_cap, base=config.backoff_base),
        config.retry_attempts,
    )
    # The same for both clients; `max_connections` bounds each node's pool of a cluster.
    options: dict[str, Any] = {
        "max_connections": config.max_connections,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        "health_check_interval": config.health_check_interval,
        "retry": retry,
        "retry_on_error": _RETRY_ON,
        "decode_responses": decode_responses,
    }
    if not config.cluster:
        return Redis.from_url(config.url, **options)
    try:
        # The cluster client retries a failed command itself (refreshing the slot map on the
        # way), with this policy.
        cluster = RedisCluster.from_url(config.url, **options)
    except RedisClusterException as exc:
        raise RedisUnavailableError(
            f"cannot use REDIS_URL as a Redis Cluster node: {exc}. A cluster has only database 0 "
            "and no unix sockets: give redis://host:port of any node, or unset REDIS_CLUSTER."
        ) from exc
    return cluster


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
    version: str  # on a cluster: the oldest node's
    server: str  # "redis" or "valkey"
    mode: str  # "standalone" or "cluster"
    append_only: bool  # False: a restart of the server (or of any node) may lose recent entries


@dataclass(frozen=True)
class _NodeInfo:
    server: str
    version: str
    redis_version: str  # the Redis protocol version the server claims (Valkey: "7.2.4")
    mode: str


def _node_info(info: Mapping[str, Any]) -> _NodeInfo:
    server = "valkey" if "valkey_version" in info else "redis"
    version = str(info.get("valkey_version") if server == "valkey" else info.get("redis_version"))
    return _NodeInfo(
        server=server,
        version=version,
        redis_version=str(info.get("redis_version", version)),
        mode=str(info.get("redis_mode") or info.get("server_mode") or "standalone"),
    )


def per_node(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The INFO sections of each node: a cluster client answers `{"host:port": {...}, ...}`,
    a single server answers its own fields."""
    if info and "redis_version" not in info and all(isinstance(v, Mapping) for v in info.values()):
        return list(info.values())
    return [info]


async def _info(client: RedisClient, section: str) -> list[Mapping[str, Any]]:
    if isinstance(client, RedisCluster):
        reply: Any = await client.info(section, target_nodes=RedisCluster.ALL_NODES)
    else:
        reply = await client.info(section)
    return per_node(reply)


async def check_server(client: RedisClient) -> RedisHealth:
    """Ping the server (every node of a cluster) and return its version; refuse servers without
    XAUTOCLAIM. On a cluster the oldest node decides the version reported and checked."""
    try:
        servers = await _info(client, "server")
        persistence = await _info(client, "persistence")
    except RedisError as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis: {exc}. Is the server running and REDIS_URL right? "
            "(unset REDIS_URL to use the embedded server; set REDIS_CLUSTER for a cluster)"
        ) from exc
    nodes = [_node_info(info) for info in servers]
    if not nodes:
        raise RedisUnavailableError(
            "Redis answered INFO with no node: is REDIS_URL a cluster node that knows its peers?"
        )
    oldest = min(nodes, key=lambda n: parse_version(n.redis_version))
    ensure_supported(oldest.redis_version)
    lowest = min(nodes, key=lambda n: parse_version(n.version))
    cluster = isinstance(client, RedisCluster) or any(n.mode == "cluster" for n in nodes)
    return RedisHealth(
        version=lowest.version,
        server=lowest.server,
        mode="cluster" if cluster else oldest.mode,
        append_only=all(int(p.get("aof_enabled", 0)) == 1 for p in persistence),
    )


async def epoch_token(redis: RedisClient, key: str) -> bytes:
    """The token of the data set Redis holds: written once (`SET NX`, random) and then read, so
    a data set that lost its keys gets a new one."""
    await redis.set(key, os.urandom(12).hex(), nx=True)
    found: Any = await redis.get(key)
    if found is None:  # lost again between the two commands: the next call writes it
        return b""
    return found.encode() if isinstance(found, str) else bytes(found)


class DataLossMonitor:
    """Notices that Redis lost its data: restarted without persistence, flushed, or replaced.

    The first check writes a random token to `key` unless one is there (SET NX) and remembers
    the token it finds. A later check that finds another token, or none, means every key was
    lost: streams, groups, pending entries and open batches. That is logged as an ERROR
    (`redis.data_lost`) by every process that notices, once per loss, and the new token is
    adopted. Entries published but not yet projected are gone; the projection in PostgreSQL
    keeps what was projected before, and a process that reaches PostgreSQL gives the watcher's
    dedupe markers back from it (`hsi.app.markers`). With append-only persistence a restart
    keeps the token.
    """

    def __init__(self, redis: RedisClient, key: str) -> None:
        self._redis = redis
        self._key = key
        self._token: bytes | None = None
        self.losses = 0

    async def check(self) -> bool:
        """True when the data set changed since the last check."""
        current = await epoch_token(self._redis, self._key)
        known, self._token = self._token, current
        if known is None or current == known:
            return False
        self.losses += 1
        log.error(
            "redis.data_lost",
            extra={
                "detail": "Redis lost its data (restarted without persistence, flushed or "
                "replaced): entries not yet projected are gone; enable append-only persistence "
                "(appendonly yes) to survive restarts",
                "key": self._key,
            },
        )
        return True

"""Where HSI's Redis and PostgreSQL are: the configured URLs, or the embedded servers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hsi.infra.embedded import EmbeddedServers

if TYPE_CHECKING:
    from hsi.settings.model import Settings


@dataclass(frozen=True)
class ServiceURLs:
    database_url: str | None  # None when the caller did not ask for PostgreSQL
    redis_url: str
    embedded: tuple[str, ...]  # names of the embedded servers in use


def embedded_servers(settings: Settings) -> EmbeddedServers:
    return EmbeddedServers(settings.data_dir)


def ensure_services(settings: Settings, *, postgres: bool = True) -> ServiceURLs:
    """The URLs to use, starting (or reusing) the embedded servers for unset ones.

    `postgres=False` is for processes that only touch Redis (write-side workers, the watcher).
    """
    servers = embedded_servers(settings)
    embedded: list[str] = []
    redis_url = settings.redis_url
    if redis_url is None:
        redis_url = servers.start_redis()
        embedded.append("redis")
    database_url = settings.database_url
    if database_url is None and postgres:
        database_url = servers.start_postgres()
        embedded.append("postgres")
    return ServiceURLs(database_url, redis_url, tuple(embedded))


def running_services(settings: Settings) -> tuple[str | None, str | None]:
    """The URLs in use now, without starting anything: None where an embedded one is down."""
    servers = embedded_servers(settings)
    database_url = settings.database_url
    if database_url is None:
        database_url = servers.postgres.status().url
    redis_url = settings.redis_url
    if redis_url is None:
        redis_url = servers.redis.status().url
    return database_url, redis_url

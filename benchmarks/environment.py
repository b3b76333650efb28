"""Where the benchmarks run: the servers, and a fresh key prefix and schema per measurement.

The servers are the ones `HSI_BENCH_REDIS_URL` / `HSI_BENCH_DATABASE_URL` name, or embedded
Valkey and PostgreSQL started in a temporary folder (as the test suite does) and stopped at the
end. Every measurement gets its own Redis key prefix and its own PostgreSQL schema (migrated),
removed afterwards, so measurements never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from redis.asyncio import Redis
from sqlalchemy import text

from hsi.infra.db import create_engine, migrate
from hsi.infra.embedded import EmbeddedPostgres, EmbeddedRedis
from hsi.settings.model import normalize_database_url

REDIS_ENV = "HSI_BENCH_REDIS_URL"
DATABASE_ENV = "HSI_BENCH_DATABASE_URL"


@dataclass(frozen=True)
class Servers:
    """The Redis and PostgreSQL servers of a benchmark run."""

    redis_url: str
    database_url: str  # SQLAlchemy's spelling: postgresql+psycopg://…
    embedded: tuple[str, ...]  # which of them this run started

    def database_url_for(self, schema: str) -> str:
        """The SQLAlchemy URL whose connections use `schema` (as `hsi up` takes DATABASE_URL)."""
        return _with_search_path(self.database_url, schema)

    def conninfo(self, schema: str | None = None) -> str:
        """The same server as a plain libpq URL for psycopg (the floors)."""
        url = "postgresql://" + self.database_url.partition("://")[2]
        return url if schema is None else _with_search_path(url, schema)

    def describe(self) -> str:
        redis = "embedded Valkey" if "redis" in self.embedded else "Redis from " + REDIS_ENV
        postgres = (
            "embedded PostgreSQL"
            if "postgres" in self.embedded
            else "PostgreSQL from " + DATABASE_ENV
        )
        return f"{redis}, {postgres}"


def _with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def servers() -> Iterator[Servers]:
    """The named servers, or embedded ones in a temporary folder for the duration."""
    redis_url = os.environ.get(REDIS_ENV) or None
    database_url = os.environ.get(DATABASE_ENV) or None
    # Not under a folder that pytest may reset to mode 0700: the embedded PostgreSQL runs as its
    # own system user when started as root and must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="hsi-bench-"))
    postgres = redis = None
    embedded: list[str] = []
    try:
        if redis_url is None:
            redis = EmbeddedRedis(folder)
            redis_url = redis.start()
            embedded.append("redis")
        if database_url is None:
            postgres = EmbeddedPostgres(folder)
            database_url = postgres.start()
            embedded.append("postgres")
        yield Servers(redis_url, normalize_database_url(database_url), tuple(embedded))
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


def new_prefix() -> str:
    """A Redis key prefix of one measurement (a valid STREAM_PREFIX)."""
    return f"bench{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def fresh_schema(servers: Servers, *, migrated: bool = True) -> AsyncIterator[str]:
    """A PostgreSQL schema of one measurement, with HSI's migrations applied; dropped after."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(servers.database_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{name}"'))
        if migrated:
            engine = create_engine(servers.database_url, schema=name)
            try:
                await migrate(engine)
            finally:
                await engine.dispose()
        try:
            yield name
        finally:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    finally:
        await admin.dispose()


async def drop_keys(redis: Redis, prefix: str) -> int:
    """Delete every key of a measurement's prefix (UNLINK: the server frees them aside)."""
    removed = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += await redis.unlink(*batch)
            batch.clear()
    if batch:
        removed += await redis.unlink(*batch)
    return removed


@asynccontextmanager
async def fresh_prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of one measurement, its keys deleted afterwards."""
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        await drop_keys(redis, prefix)


@asynccontextmanager
async def fresh_round(servers: Servers) -> AsyncIterator[tuple[Redis, str, str]]:
    """(a Redis client, a fresh key prefix, a fresh migrated schema) of one measurement; the
    keys and the schema are deleted and the client closed afterwards."""
    redis = Redis.from_url(servers.redis_url)
    try:
        async with fresh_prefix(redis) as prefix, fresh_schema(servers) as schema:
            yield redis, prefix, schema
    finally:
        await redis.aclose()

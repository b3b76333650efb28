"""Where the demo runs, kept apart from a real installation, and how it starts afresh each time.

The demo takes the settings in effect and changes only what keeps it apart and quick:

- `DATA_DIR/demo` holds its embedded servers (when REDIS_URL/DATABASE_URL are unset), its camera
  root `DATA_DIR/demo/cameras` (never the real FOSCAM_BASE_PATH) and its log `demo.log`;
- its Redis keys start with `<STREAM_PREFIX>demo` (`hsidemo`);
- on a configured DATABASE_URL its tables live in a schema of that name (`hsidemo`), unless the
  URL already pins a search_path;
- the API listens on loopback only, without TLS or API keys; the FTP receiver stays off;
- batches close after 4 s without detections (window 20 s), divided by `--speed`, so the events
  appear while you watch.

Every run deletes the demo's keys, empties its tables (a replay of its now empty streams) and its
camera folders first, so a second run shows the same scene from scratch.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import make_url

from hsi.infra.embedded.processes import LOOPBACK, free_port, port_is_free
from hsi.settings.model import Settings, TLSMode

if TYPE_CHECKING:
    from hsi.app.services import ServiceURLs
    from hsi.infra.redis import RedisClient
    from streams.names import StreamNames

DEMO_FOLDER = "demo"
DEMO_SUFFIX = "demo"
LOG_NAME = "demo.log"
BATCH_WINDOW_SECONDS = 20.0
BATCH_IDLE_SECONDS = 4.0


class DemoError(RuntimeError):
    """The demo cannot run; the message says why and what to do."""


def demo_prefix(stream_prefix: str) -> str:
    """`hsi` → `hsidemo` (at most 32 characters, as STREAM_PREFIX allows)."""
    return stream_prefix[: 32 - len(DEMO_SUFFIX)] + DEMO_SUFFIX


def pin_schema(database_url: str, schema: str) -> tuple[str, str | None]:
    """The URL with its search_path set to `schema`, and the schema to create; the URL unchanged
    (and None) when it already names a search_path."""
    url = make_url(database_url)
    raw = url.query.get("options")
    options = " ".join(raw) if isinstance(raw, tuple) else (raw or "")
    if "search_path" in options:
        return database_url, None
    pinned = f"{options} -csearch_path={schema}".strip()
    return url.update_query_dict({"options": pinned}).render_as_string(hide_password=False), schema


@dataclass(frozen=True)
class Sandbox:
    """The demo's settings and the PostgreSQL schema it must create (None: nothing to create)."""

    settings: Settings
    schema: str | None

    @property
    def log_path(self) -> Path:
        return self.settings.data_dir / LOG_NAME


def sandbox(settings: Settings, speed: float = 1.0) -> Sandbox:
    """The demo's variant of `settings` (see the module docstring)."""
    data_dir = settings.data_dir / DEMO_FOLDER
    prefix = demo_prefix(settings.stream_prefix)
    idle = max(1.0, BATCH_IDLE_SECONDS / speed)
    database_url, schema = settings.database_url, None
    if database_url is not None:
        database_url, schema = pin_schema(database_url, prefix.replace("-", "_"))
    demo = settings.model_copy(
        update={
            "data_dir": data_dir,
            "foscam_base_path": data_dir / "cameras",
            "stream_prefix": prefix,
            "database_url": database_url,
            "api_host": LOOPBACK,
            "tls_mode": TLSMode.DISABLED,
            "api_key_enabled": False,
            "ftp_enabled": False,
            "log_file": None,
            "log_db_enabled": False,
            "batch_window_seconds": max(idle, BATCH_WINDOW_SECONDS / speed),
            "batch_idle_timeout_seconds": idle,
        }
    )
    return Sandbox(demo, schema)


def choose_port(
    requested: int | None, api_port: int, *, api_port_set: bool
) -> tuple[int, str | None]:
    """`--port`, else API_PORT when it was set (both must be free), else API_PORT's default when
    free, else any free port (say, while `hsi up` holds 8000); with a note when it moved."""
    explicit = requested if requested is not None else (api_port if api_port_set else None)
    if explicit:
        if not port_is_free(explicit):
            raise DemoError(
                f"port {explicit} is in use (is `hsi up` or another demo running?): stop it, "
                "or pass --port with a free port"
            )
        return explicit, None
    if api_port and port_is_free(api_port):
        return api_port, None
    port = free_port()
    if not api_port:
        return port, None
    return port, f"port {api_port} is in use (by `hsi up`?): the demo's API uses port {port}"


async def clear_keys(redis: RedisClient, names: StreamNames) -> int:
    """Delete every Redis key of the demo's prefix; return how many there were."""
    keys = [key async for key in redis.scan_iter(match=f"{names.prefix}:*", count=1000)]
    for key in keys:  # one at a time: on Redis Cluster the keys live in many slots
        await redis.unlink(key)
    return len(keys)


async def reset(box: Sandbox, urls: ServiceURLs) -> None:
    """Start afresh: schema and migrations in place, no keys, empty tables, no camera files."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import DBAPIError

    from projections.errors import ProjectionError

    try:
        await _reset_servers(box, urls)
    except (DBAPIError, RedisError, ProjectionError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise DemoError(
            f"could not clear the previous demo run ({type(cause).__name__}: {reason}); check that "
            "Redis and PostgreSQL answer (`hsi doctor`), or unset REDIS_URL/DATABASE_URL to let "
            "the demo start its own"
        ) from exc
    root = box.settings.camera_root
    await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


async def _reset_servers(box: Sandbox, urls: ServiceURLs) -> None:
    from hsi.app import read_side
    from hsi.infra.db import create_engine, migrate
    from hsi.infra.redis import create_redis
    from hsi.settings import components

    assert urls.database_url is not None
    engine = create_engine(urls.database_url)
    try:
        if box.schema is not None:
            async with engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{box.schema}"'))
        await migrate(engine)
        client = create_redis(components.redis_config(box.settings, urls.redis_url))
        try:
            names = components.stream_names(box.settings)
            await clear_keys(client, names)
            await read_side.replay(engine, client, names)  # no streams left: empty tables
        finally:
            await client.aclose()
    finally:
        await engine.dispose()

"""A small real run for the observability tests: watcher → detect → batch → analyze → project.

Files go through `Watcher.ingest` (the watcher's own route, without waiting for file-system
events) into a `Pipeline` running every stage against the test's Redis prefix and PostgreSQL
schema; the run ends when the event is projected and every stream is drained.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.asgi import APIConfig, RateLimits, create_app
from hsi.app.pipeline import ALL_STAGES, Pipeline, PipelineOptions
from hsi.infra.redis import RedisConfig
from hsi.infra.telemetry import render_metrics
from hsi.settings.model import Settings
from streams.names import StreamNames
from streams.watch.config import WatchConfig
from streams.watch.outcomes import Outcome
from streams.watch.watcher import Watcher
from tests.conftest import PHOTOS

CAMERA = "front_door"
FOLDER = "Front Door"
FAST = WatchConfig(
    stable_seconds=0.2,
    incomplete_timeout_seconds=1.0,
    poll_interval=0.1,
    debounce_seconds=0.02,
    min_image_bytes=100,
    timezone="UTC",
)
# Two photos with a person (one batch of two files), one without, and a copy of the first.
FILES: tuple[tuple[str, str], ...] = (
    ("person-astronaut.jpg", "a.jpg"),
    ("person-cameraman.jpg", "b.jpg"),
    ("empty-rocket.jpg", "c.jpg"),
    ("person-astronaut.jpg", "d.jpg"),
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def settings(root: Path, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "foscam_base_path": root,
        "stream_prefix": prefix,
        "batch_window_seconds": 4,
        "batch_idle_timeout_seconds": 1,
        "stream_reclaim_idle_ms": 5000,
        "stream_reclaim_interval_seconds": 0.5,
        "stream_block_ms": 100,
        "detection_confidence_threshold": 0.35,
        "timezone": "UTC",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def schema_url(database_url: str, schema: str) -> str:
    return f"{database_url}?options=-csearch_path%3D{schema}"


def samples(body: bytes | None = None) -> Samples:
    """Every sample of the exposition, parsed by prometheus_client's own parser."""
    if body is None:
        body, _ = render_metrics()
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


@dataclass
class Run:
    names: StreamNames
    outcomes: list[Outcome]
    exposition: bytes  # /metrics while the pipeline still ran (stream gauges refreshed)


def put_files(root: Path, files: Iterable[tuple[str, str]]) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for photo, name in files:
        shutil.copy(PHOTOS / photo, folder / name)
    return folder


async def _events_done(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM events WHERE analysis_status <> 'pending'")
        )
    return int(found or 0)


def all_stages(
    root: Path, prefix: str, redis_url: str, database_url: str, db_schema: str, **overrides: Any
) -> Pipeline:
    """A pipeline of every stage on the test's servers and schema, with quick timers;
    `overrides` change its settings (`settings`)."""
    return Pipeline(
        settings(root, prefix, **overrides),
        redis_url,
        PipelineOptions(
            stages=ALL_STAGES,
            discovery_interval_seconds=0.1,
            batch_tick_seconds=0.1,
            stream_gauges_interval_seconds=60,
        ),
        database_url=schema_url(database_url, db_schema),
    )


async def run_pipeline(
    *,
    redis: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    engine: AsyncEngine,
    prefix: str,
    root: Path,
    events: int = 1,
) -> Run:
    """Ingest `FILES` and run every stage until `events` events are analyzed and projected."""
    pipeline = all_stages(root, prefix, redis_url, database_url, db_schema)
    await pipeline.start()
    try:
        watcher = Watcher(redis, pipeline.names, root, FAST)
        outcomes = await watcher.ingest(put_files(root, FILES[:3]))
        # The copy afterwards, so that it is the duplicate (ingest works files concurrently).
        outcomes += await watcher.ingest(put_files(root, FILES[3:]) / FILES[3][1])
        async with asyncio.timeout(30):
            while True:
                if await _events_done(engine) >= events:
                    break
                await asyncio.sleep(0.05)
        await pipeline.drain(15)
        assert pipeline.gauges is not None
        await pipeline.gauges.refresh()
        exposition, _ = render_metrics()
    finally:
        await pipeline.stop()
    return Run(pipeline.names, outcomes, exposition)


@asynccontextmanager
async def serve(config: APIConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the app with its lifespan running (httpx runs no lifespan itself)."""
    app = create_app(config)
    async with app.router.lifespan_context(app) as state:

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://hsi.test") as client:
            yield client


def api_config(
    database_url: str, db_schema: str, redis_url: str, prefix: str, tmp_path: Path
) -> APIConfig:
    return APIConfig(
        database_url=database_url,
        redis=RedisConfig(url=redis_url),
        database_schema=db_schema,
        stream_prefix=prefix,
        camera_root=tmp_path / "cameras",
        data_dir=tmp_path / "data",
        rate_limits=RateLimits(enabled=False),
    )

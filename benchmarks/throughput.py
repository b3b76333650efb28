"""B1 pipeline throughput: files/s from the first `file.observed` to the last projected row.

HSI: `N` files over `C` cameras are published as `hsi ingest` publishes them (the watcher's
`Ledger.publish_once`: dedupe marker and XADD in one Lua script per file, the scripts of the
files in flight sent together as one pipeline; 64 files in flight, each with its own `watch`
root span), while one `Pipeline` runs every stage as `hsi up` does (detect with a
zero-cost in-process detector answering a car and a person, batch, analyze with the `rules`
analyzer, project into PostgreSQL), with telemetry set up as `hsi up` sets it up (traces sampled,
metrics on, no exporter). Every batch closes at its maximum size (50 objects = 25 files; `N / C`
is a multiple of 25), so the run ends without waiting for a batch timer. The clock stops when
PostgreSQL holds every file as detected and every event as analysed.

Floor: `benchmarks.floor.RawPipeline` — the same hops and rows with raw redis-py (pipelined XADD,
XREADGROUP COUNT 500, MULTI with XACK) and psycopg (COPY and pipelined executemany).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.environment import Servers, fresh_round
from benchmarks.fakes import CAR_AND_PERSON, FixedDetector
from benchmarks.floor import RawPipeline, publish_files
from benchmarks.options import Options
from benchmarks.report import Figure, Target, rate
from benchmarks.timing import alternate, wait_for_rows
from hsi.app.pipeline import ALL_STAGES, Pipeline, PipelineOptions
from hsi.infra.telemetry import TelemetryConfig, reset_telemetry, setup_telemetry, stage_telemetry
from hsi.settings.model import Settings
from streams.detectors import DetectedObject
from streams.envelope import HEADER_TRACEPARENT
from streams.names import StreamNames
from streams.schemas import CameraRegistered, FileObserved
from streams.tracing import OK, end_span, root_span, traceparent_of
from streams.watch.ledger import Ledger

NAME = "throughput"
FILES_PER_BATCH = 25  # two objects per file, 50 objects per batch
IN_FLIGHT = 64  # as `hsi ingest` (WatchConfig.scan_concurrency)


def cameras(count: int) -> list[str]:
    return [f"cam_{index:02d}" for index in range(count)]


def sizes(options: Options) -> tuple[int, int]:
    """(files, cameras) of one round."""
    return options.pick(full=(20_000, 8), quick=(4_000, 4), smoke=(200, 2))


def file_entry(camera: str, index: int) -> FileObserved:
    now = datetime.now(UTC)
    return FileObserved(
        camera_id=camera,
        path=f"{camera}/IMG_{index:07d}.jpg",
        sha256=uuid.uuid4().hex * 2,
        size=48_213,
        mime="image/jpeg",
        media_kind="image",
        captured_at=now,
        capture_source="mtime",
        observed_at=now,
    )


async def register_cameras(ledger: Ledger, ids: Sequence[str]) -> None:
    for camera in ids:
        await ledger.register_camera(
            CameraRegistered(
                camera_id=camera, name=camera, folder=camera, registered_at=datetime.now(UTC)
            )
        )


async def ingest(ledger: Ledger, ids: Sequence[str], count: int) -> None:
    """Publish `count` files round robin over the cameras, as the watcher publishes each file."""
    await publish(ledger, (file_entry(ids[index % len(ids)], index) for index in range(count)))


async def publish(ledger: Ledger, entries: Iterable[FileObserved]) -> None:
    """Publish `entries` as the watcher publishes each file: `IN_FLIGHT` at a time, each in its
    own `watch` root span whose `traceparent` goes into the entry's headers."""
    telemetry = stage_telemetry()
    queue = iter(entries)

    async def worker() -> None:
        for entry in queue:
            span = root_span(telemetry, "watch")
            headers = {}
            traceparent = traceparent_of(span)
            if traceparent is not None:
                headers[HEADER_TRACEPARENT] = traceparent
            await ledger.publish_once(entry, headers)
            end_span(span, OK)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def settings_for(prefix: str, root: Path, **overrides: Any) -> Settings:
    """HSI's settings for a benchmark: defaults, except where the benchmark says."""
    values: dict[str, Any] = {
        "stream_prefix": prefix,
        "foscam_base_path": root,
        "timezone": "UTC",
        "data_dir": root.parent / "data",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def running_pipeline(
    servers: Servers, settings: Settings, schema: str, objects: tuple[DetectedObject, ...] | None
) -> AsyncIterator[Pipeline]:
    """HSI's pipeline with every stage and `hsi up`'s telemetry, answering `objects` for each
    file (`None`: with the detector `hsi up` builds from `settings`) and projecting into
    `schema`; stopped afterwards."""
    setup_telemetry(TelemetryConfig())
    pipeline = Pipeline(
        settings,
        servers.redis_url,
        PipelineOptions(stages=ALL_STAGES),
        detector=None if objects is None else FixedDetector(objects),
        database_url=servers.database_url_for(schema),
    )
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()
        reset_telemetry()


async def files_per_second(
    servers: Servers,
    schema: str,
    files: int,
    camera_count: int,
    publish: Callable[[], Coroutine[Any, Any, None]],
    what: str,
) -> float:
    """Files/s from starting `publish` to every file detected and every event analysed."""
    events = camera_count * (files // camera_count // FILES_PER_BATCH)
    async with await psycopg.AsyncConnection.connect(
        servers.conninfo(schema), autocommit=True
    ) as conn:
        started = time.perf_counter()
        publishing = asyncio.create_task(publish())
        ended = await wait_for_rows(conn, files, events, within_seconds=600, what=what)
        await publishing
    return files / (ended - started)


async def measure_hsi(servers: Servers, files: int, camera_count: int) -> float:
    """Files/s of HSI's pipeline for one round."""
    ids = cameras(camera_count)
    async with fresh_round(servers) as (redis, prefix, schema):
        with tempfile.TemporaryDirectory(prefix="hsi-bench-root-") as folder:
            settings = settings_for(prefix, Path(folder) / "cameras")
            async with running_pipeline(servers, settings, schema, CAR_AND_PERSON) as pipeline:
                ledger = Ledger(redis, pipeline.names, settings.dedupe_ttl)
                await register_cameras(ledger, ids)
                await pipeline.discover()
                return await files_per_second(
                    servers, schema, files, camera_count, lambda: ingest(ledger, ids, files), "HSI"
                )


async def measure_floor(servers: Servers, files: int, camera_count: int) -> float:
    """Files/s of the raw floor for one round."""
    ids = cameras(camera_count)
    async with fresh_round(servers) as (redis, prefix, schema):
        names = StreamNames(prefix)
        raw = RawPipeline(redis, servers.conninfo(schema), names, ids)
        await raw.start()
        try:
            return await files_per_second(
                servers,
                schema,
                files,
                camera_count,
                lambda: publish_files(redis, names, ids, files),
                "floor",
            )
        finally:
            await raw.stop()


def run(servers: Servers, options: Options) -> list[Figure]:
    files, camera_count = sizes(options)
    figure = rate(
        "B1",
        f"pipeline throughput, {files} files over {camera_count} cameras",
        "files/s",
        target=Target(min_ratio=0.5),
        note=(
            "first file.observed → last event analysed and file detected in PostgreSQL; "
            "zero-cost detector, rules analyzer, batches of 25 files; floor: raw redis-py + "
            "psycopg doing the same hops and rows"
        ),
    )
    assert figure.floor is not None
    for index in range(options.rounds):
        hsi, floor = alternate(
            index,
            lambda: measure_hsi(servers, files, camera_count),
            lambda: measure_floor(servers, files, camera_count),
        )
        figure.hsi.append(hsi)
        figure.floor.append(floor)
    return [figure]

"""B3 replay: rebuild every projection from the streams, in stream entries per second.

The streams hold `benchmarks.streamdata`'s realistic entries (files, detections with two
objects each, batches of 25 files, analyses, camera registrations), written once and read by
every round.

HSI: `projections.replay.rebuild` (what `hsi replay` runs) into a freshly migrated, empty live
schema: shadow tables, XRANGE pages through the projector, deferred indexes, catch-up, swap.

Floor: the same shadow tables (`projections.shadow`, so the DDL is identical), then per camera
XRANGE pages of 10 000 entries, the bodies read with `struct` + orjson, the final rows merged in
memory (a file's row with its detection's columns, an event with its analysis) and written by
psycopg COPY — tracking rows included — then the same deferred indexes.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.environment import Servers, fresh_prefix, fresh_schema
from benchmarks.floor import (
    COPY_CHECKPOINTS,
    COPY_DETECTIONS,
    COPY_MEMBERS,
    batch_columns,
    copy_rows,
    detected_columns,
    detection_rows,
    file_columns,
    member_rows,
    verdict_columns,
)
from benchmarks.options import Options
from benchmarks.report import Figure, Target, rate
from benchmarks.streamdata import Layout, write
from hsi.infra.db import create_engine
from projections.projector import DEFAULT_PROJECTION
from projections.replay import ReplayConfig, rebuild, verify
from projections.shadow import (
    compare,
    create_indexes,
    create_shadow,
    drop_schemas,
    scratch_schema,
)
from streams.envelope import DATA_FIELD
from streams.ids import detection_id, event_id, media_file_id
from streams.names import StreamNames

NAME = "replay"
_DATA_START = struct.Struct(">I")


def layout_for(options: Options) -> Layout:
    entries = options.pick(full=1_000_000, quick=100_000, smoke=2_000)
    return Layout.for_entries(entries, options.pick(full=8, quick=8, smoke=2))


async def measure_hsi(servers: Servers, redis: Redis, names: StreamNames) -> tuple[float, int]:
    """(entries/s, entries read) of `hsi replay` for one round."""
    async with fresh_schema(servers) as live:
        engine = create_engine(servers.database_url, schema=live)
        try:
            started = time.perf_counter()
            report = await rebuild(engine, redis, names)
            seconds = time.perf_counter() - started
        finally:
            await engine.dispose()
    return report.entries / seconds, report.entries


async def _pages(redis: Redis, stream: str, size: int) -> AsyncIterator[list[tuple[str, Any]]]:
    start = "-"
    while True:
        rows: Any = await redis.xrange(stream, start, "+", count=size)
        if not rows:
            return
        page = [(entry_id.decode(), fields) for entry_id, fields in rows]
        yield page
        if len(rows) < size:
            return
        start = f"({page[-1][0]}"


def _body(fields: dict[bytes, bytes]) -> Any:
    data = fields[DATA_FIELD]
    (start,) = _DATA_START.unpack_from(data, 14)
    return orjson.loads(data[start:])


async def _bodies(
    redis: Redis, stream: str, size: int, checkpoints: list[tuple[Any, ...]]
) -> AsyncIterator[list[tuple[str, Any]]]:
    """Pages of `stream`'s entries as (entry id, body), their tracking rows added to
    `checkpoints`."""
    async for entries in _pages(redis, stream, size):
        checkpoints.extend((DEFAULT_PROJECTION, stream, entry_id) for entry_id, _ in entries)
        yield [(entry_id, _body(fields)) for entry_id, fields in entries]


_MEDIA_COLUMNS = (
    "id, camera_id, entry_id, path, sha256, size, mime, media_kind, captured_at, capture_source, "
    "observed_at, detection_status, detector, image_width, image_height, object_count, detected_at"
)
_EVENT_COLUMNS = (
    "id, camera_id, batch_entry_id, window_start, window_end, close_reason, detection_count, "
    "object_types, max_confidence, fast_path, closed_at, analysis_status, analysis_entry_id, "
    "risk_score, risk_level, summary, reasoning, analyzer, model, prompt_hash, "
    "analysis_latency_ms, analyzed_at"
)


async def _floor_camera(
    redis: Redis, cur: psycopg.AsyncCursor[Any], names: StreamNames, camera: str, page: int
) -> tuple[int, tuple[Any, ...]]:
    """Read one camera's streams and COPY its rows; (entries read, the camera's row)."""
    checkpoints: list[tuple[Any, ...]] = []
    media: dict[str, list[Any]] = {}
    detections: list[tuple[Any, ...]] = []
    first = last = last_event = None
    async for entries in _bodies(redis, names.files(camera), page, checkpoints):
        for entry_id, body in entries:
            media[entry_id] = [
                media_file_id(camera, entry_id),
                camera,
                entry_id,
                *file_columns(body),
                "pending",
                None,
                None,
                None,
                None,
                None,
            ]
            first = first or body["observed_at"]
            last = body["observed_at"]
    async for entries in _bodies(redis, names.detections(camera), page, checkpoints):
        for entry_id, body in entries:
            row = media[body["file_entry_id"]]
            row[11:17] = ["completed", *detected_columns(body)]
            detections.extend(
                detection_rows(
                    camera,
                    entry_id,
                    row[0],
                    body,
                    detection_id,
                    ("width", "height"),
                )
            )
    files = len(media)
    await copy_rows(
        cur, f"COPY media_files ({_MEDIA_COLUMNS}) FROM STDIN", [tuple(r) for r in media.values()]
    )
    await copy_rows(cur, COPY_DETECTIONS, detections)
    media.clear()
    detections.clear()
    events: dict[str, list[Any]] = {}
    members: list[tuple[Any, ...]] = []
    async for entries in _bodies(redis, names.batches(camera), page, checkpoints):
        for entry_id, body in entries:
            event = event_id(camera, body["batch_id"])
            events[body["batch_id"]] = [
                event,
                camera,
                entry_id,
                *batch_columns(body),
                "pending",
                *([None] * 10),
            ]
            members.extend(member_rows(event, camera, body))
            last_event = body["window_start"]
    async for entries in _bodies(redis, names.analyses(camera), page, checkpoints):
        for entry_id, body in entries:
            events[body["batch_id"]][11:22] = [
                "completed",
                entry_id,
                *verdict_columns(body),
                body["model"],
                body["prompt_hash"],
                body["latency_ms"],
                body["analyzed_at"],
            ]
    await copy_rows(
        cur, f"COPY events ({_EVENT_COLUMNS}) FROM STDIN", [tuple(e) for e in events.values()]
    )
    await copy_rows(cur, COPY_MEMBERS, members)
    await copy_rows(cur, COPY_CHECKPOINTS, checkpoints)
    camera_row = (camera, camera, camera, first, last, files, len(events), last_event)
    return len(checkpoints), camera_row


async def _floor_load(
    servers: Servers,
    redis: Redis,
    names: StreamNames,
    layout: Layout,
    engine: AsyncEngine,
    live: str,
    shadow: str,
    page: int,
) -> int:
    """The floor's tables in schema `shadow` next to `live`, indexes included; entries read."""
    tables = await create_shadow(engine, live, shadow)
    read = 0
    async with await psycopg.AsyncConnection.connect(servers.conninfo(shadow)) as conn:
        async with conn.cursor() as cur:
            cameras: list[tuple[Any, ...]] = []
            stream = names.cameras
            checkpoints = []
            async for entries in _pages(redis, stream, page):
                checkpoints += [(DEFAULT_PROJECTION, stream, i) for i, _ in entries]
                read += len(entries)
            for camera in layout.cameras:
                camera_read, row = await _floor_camera(redis, cur, names, camera, page)
                read += camera_read
                cameras.append(row)
            await copy_rows(cur, COPY_CHECKPOINTS, checkpoints)
            await copy_rows(
                cur,
                "COPY cameras (id, name, folder, first_seen, last_seen, file_count, "
                "event_count, last_event_at) FROM STDIN",
                cameras,
            )
        await conn.commit()
    await create_indexes(engine, tables)
    return read


async def measure_floor(
    servers: Servers, redis: Redis, names: StreamNames, layout: Layout, page: int = 10_000
) -> float:
    """Entries/s of the raw floor for one round."""
    async with fresh_schema(servers) as live:
        engine = create_engine(servers.database_url, schema=live)
        shadow = scratch_schema(live, "floor")
        try:
            started = time.perf_counter()
            read = await _floor_load(servers, redis, names, layout, engine, live, shadow, page)
            seconds = time.perf_counter() - started
        finally:
            await drop_schemas(engine, [shadow])
            await engine.dispose()
    return read / seconds


async def check(servers: Servers, redis: Redis, names: StreamNames, layout: Layout) -> str:
    """Untimed (`--check`): the projector's own tables (a rebuild page by page, as the live
    projection applies entries), then `verify` — what `hsi replay --verify` runs: a bulk rebuild
    compared with them — and the floor's tables compared with them. A line saying what held;
    raises when verify finds a difference."""
    async with fresh_schema(servers) as live:
        engine = create_engine(servers.database_url, schema=live)
        floor = scratch_schema(live, "floor")
        try:
            paged = await rebuild(engine, redis, names, config=ReplayConfig(bulk=False))
            started = time.perf_counter()
            report = await verify(engine, redis, names)
            seconds = time.perf_counter() - started
            await _floor_load(servers, redis, names, layout, engine, live, floor, 10_000)
            async with engine.connect() as conn:
                floor_diffs = [d for d in await compare(conn, live, floor, 3) if not d.equal]
        finally:
            await drop_schemas(engine, [floor])
            await engine.dispose()
    if not report.equal or not report.replay.bulk or paged.bulk:
        raise AssertionError(
            f"hsi replay --verify (bulk: {report.replay.bulk}) differs from the projector's "
            f"tables: {report.differences}"
        )
    floor_note = (
        "the floor's tables equal them"
        if not floor_diffs
        else "the floor's tables differ in "
        + ", ".join(f"{d.table} ({d.only_live} rows only HSI's)" for d in floor_diffs)
    )
    return (
        f"--check: hsi replay --verify of {report.replay.entries} entries (bulk load) equals the "
        f"projector's page-by-page tables ({seconds:.0f} s); {floor_note}"
    )


def run(servers: Servers, options: Options) -> list[Figure]:
    layout = layout_for(options)
    figure = rate(
        "B3",
        f"replay, {layout.entries} stream entries ({len(layout.cameras)} cameras)",
        "entries/s",
        target=Target(min_ratio=0.5),
        note=(
            "projections.replay.rebuild into an empty schema (shadow tables, deferred indexes, "
            "swap); floor: XRANGE pages + struct/orjson + COPY of the same rows, same DDL"
        ),
    )
    assert figure.floor is not None
    # A million entries take HSI minutes: one round in the full run, two in the quick one.
    rounds = options.pick(full=1, quick=min(options.rounds, 2), smoke=1)

    async def body() -> None:
        redis = Redis.from_url(servers.redis_url)
        try:
            async with fresh_prefix(redis) as prefix:
                names = StreamNames(prefix)
                await write(redis, names, layout)
                for index in range(rounds):
                    if index % 2 == 0:
                        hsi, _ = await measure_hsi(servers, redis, names)
                        floor = await measure_floor(servers, redis, names, layout)
                    else:
                        floor = await measure_floor(servers, redis, names, layout)
                        hsi, _ = await measure_hsi(servers, redis, names)
                    figure.hsi.append(hsi)
                    assert figure.floor is not None
                    figure.floor.append(floor)
                if options.check:
                    figure.note += "; " + await check(servers, redis, names, layout)
        finally:
            await redis.aclose()

    asyncio.run(body())
    return [figure]

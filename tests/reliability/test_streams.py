"""Streams reliability: trimming while entries are pending, and consumer groups lost at run time.

Retention trims a stream only below what every consumer group has acknowledged: entries a crashed
stage still holds (pending) and entries a lagging projector has not read yet survive every run,
and once the consumers catch up each entry was processed exactly once. A group lost while HSI runs
(XGROUP DESTROY, the stream deleted, the keys flushed) is recreated where it was, with a warning,
and the stage, the projector and the reclaimer go on without a restart, losing nothing and running
nothing twice. Everything runs on the real Redis and PostgreSQL, with the real stages, reclaimer,
pipeline and `hsi worker` process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.pipeline import Pipeline, PipelineOptions
from hsi.infra.db import migrate
from hsi.settings.model import Settings
from projections.projector import ProjectionResult, Projector, ProjectStage
from projections.retention import RetentionReport, run_retention
from streams.contract import StreamEntry
from streams.detectors.embedded import EmbeddedDetector
from streams.envelope import entry_fields, read_fields
from streams.groups import (
    GroupStart,
    PendingEntry,
    ensure_group,
    previous_id,
    start_of,
)
from streams.names import Group, StreamKind, StreamNames
from streams.reclaim import ReclaimConfig, Reclaimer, ReclaimStats
from streams.replies import id_key
from streams.schemas import DetectionCompleted, DetectionFailed, FileObserved
from streams.stages.detect import DetectStage
from tests.conftest import PHOTOS

CAMERA = "front_door"
FOLDER = "Front Door"
TIMEOUT = 30.0
RETENTION_DAYS = 30
PICTURES = ("person-astronaut.jpg", "empty-rocket.jpg", "cat-chelsea.jpg")
_MAX_SEQ = 2**64 - 1


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    """The test's own PostgreSQL schema, migrated."""
    await migrate(db_engine)
    return db_engine


@pytest.fixture
def camera_root(tmp_path: Path) -> Path:
    return tmp_path / "cameras"


@pytest.fixture
async def detector() -> AsyncIterator[EmbeddedDetector]:
    """HSI's own CPU detector (shipped with the package)."""
    embedded = EmbeddedDetector(threads=1)
    yield embedded
    await embedded.aclose()


@pytest.fixture
def warnings_of(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[logging.LogRecord]]:
    """The captured records with a given message (a stable event name)."""
    caplog.set_level(logging.INFO)

    def records(event: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == event]

    return records


# --- helpers ------------------------------------------------------------------------------------


def _settings(root: Path, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "foscam_base_path": root,
        "stream_prefix": prefix,
        "stream_block_ms": 100,
        "stream_reclaim_idle_ms": 500,
        # The reclaimer's rounds are far apart here: a test that loses a group knows which of
        # the runner and the reclaimer recreates it (the runner looks every `stream_block_ms`).
        "stream_reclaim_interval_seconds": 60,
        "batch_window_seconds": 60,
        "batch_idle_timeout_seconds": 30,
        "timezone": "UTC",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def _publish_files(
    redis: Redis,
    names: StreamNames,
    root: Path,
    numbers: range,
    *,
    id_ms: int | None = None,
) -> list[str]:
    """Copy a photo per number into the camera folder and XADD its `file.observed` (with ids
    `<id_ms>-<n>` when given, else new ids). Captured now, so the rows outlive retention."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    await redis.sadd(names.camera_set, CAMERA)
    ids = []
    for n in numbers:
        target = folder / f"MDAlarm_{n:04d}.jpg"
        shutil.copy(PHOTOS / PICTURES[n % len(PICTURES)], target)
        data = target.read_bytes()
        now = datetime.now(UTC)
        entry = FileObserved(
            camera_id=CAMERA,
            path=f"{FOLDER}/{target.name}",
            sha256=hashlib.sha256(data + n.to_bytes(4, "big")).hexdigest(),
            size=len(data),
            mime="image/jpeg",
            media_kind="image",
            captured_at=now,
            capture_source="mtime",
            observed_at=now,
        )
        entry_id = await redis.xadd(
            names.files(CAMERA),
            entry_fields(entry),  # type: ignore[arg-type]  # redis-py's field mapping
            id="*" if id_ms is None else f"{id_ms}-{n}",
        )
        ids.append(entry_id.decode())
    return ids


async def _ids(redis: Redis, stream: str) -> list[str]:
    rows: Any = await redis.xrange(stream)
    return [entry_id.decode() for entry_id, _ in rows]


async def _detected_files(redis: Redis, names: StreamNames) -> list[str]:
    """The file entry id of every detection entry, in stream order (duplicates kept)."""
    found = []
    for _, fields in await redis.xrange(names.detections(CAMERA)):
        entry, _ = read_fields(fields)
        assert isinstance(entry, DetectionCompleted | DetectionFailed)
        found.append(entry.file_entry_id)
    return found


async def _group(redis: Redis, stream: str, group: str) -> dict[str, Any] | None:
    """The group's XINFO GROUPS row; None when it (or the stream) does not exist."""
    try:
        infos: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key
        return None
    for info in infos:
        if info["name"].decode() == group:
            return dict(info)
    return None


async def _caught_up(redis: Redis, stream: str, group: str) -> bool:
    """Nothing pending for the group, and the last entry of the stream delivered to it."""
    info = await _group(redis, stream, group)
    assert info is not None
    last: Any = await redis.xrevrange(stream, count=1)
    delivered = info["last-delivered-id"].decode()
    return not info["pending"] and (not last or last[0][0].decode() == delivered)


async def _pending(redis: Redis, stream: str, group: str) -> list[tuple[str, str, int]]:
    rows: Any = await redis.xpending_range(stream, group, "-", "+", 1000)
    return [
        (r["message_id"].decode(), r["consumer"].decode(), int(r["times_delivered"])) for r in rows
    ]


async def _eventually(done: Callable[[], Awaitable[bool]], seconds: float = TIMEOUT) -> None:
    """Poll `done()` until it is true; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await done():
        assert loop.time() < deadline, f"condition not met within {seconds} s"
        await asyncio.sleep(0.02)


async def _read(
    redis: Redis, stream: str, group: str, consumer: str, count: int
) -> list[StreamEntry]:
    reply: Any = await redis.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [(i.decode(), f) for i, f in reply[0][1]] if reply else []


async def _rows(engine: AsyncEngine, sql: str, **params: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


_TRACKED = "SELECT count(*) FROM projection_checkpoints WHERE stream = :stream"


async def _reclaim_until(reclaimer: Reclaimer, *, rerun: int) -> ReclaimStats:
    """Reclaim rounds until `rerun` entries were re-run (the entries put back pending have to be
    idle `idle_ms` first); what they did, added up."""
    total = ReclaimStats()

    async def enough() -> bool:
        nonlocal total
        total += await reclaimer.run_once()
        return total.rerun >= rerun

    await _eventually(enough)
    return total


def _reclaim_config(idle_ms: int = 1) -> ReclaimConfig:
    return ReclaimConfig(
        idle_ms=idle_ms, max_deliveries=5, interval_seconds=0.05, backoff_base_seconds=0.01
    )


async def _retention(engine: AsyncEngine, redis: Redis, names: StreamNames) -> RetentionReport:
    """One retention run of the camera, as `hsi retention run` makes it (media left alone)."""
    return await run_retention(
        engine,
        redis,
        names,
        [CAMERA],
        datetime.now(UTC),
        RETENTION_DAYS,
        delete_media=False,
        camera_root=None,
    )


def _trim_of(report: RetentionReport, stream: str) -> tuple[str | None, int]:
    trim = next(t for t in report.streams if t.stream == stream)
    return trim.minid, trim.trimmed


def _old_ms() -> int:
    """Stream ids from before the retention cutoff."""
    return int((datetime.now(UTC) - timedelta(days=RETENTION_DAYS + 10)).timestamp() * 1000)


class Applied:
    """The project stage's handler, counting what each entry's deliveries did."""

    def __init__(self, stage: ProjectStage) -> None:
        self._stage = stage
        self.applied: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    async def __call__(self, stream: str, entries: list[StreamEntry]) -> ProjectionResult:
        result = await self._stage.handle(stream, entries)
        self.applied.update(result.applied)
        self.skipped.update(result.skipped)
        return result


# --- decisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry_id", "expected"),
    [
        ("5-3", "5-2"),
        ("5-0", f"4-{_MAX_SEQ}"),
        ("5", f"4-{_MAX_SEQ}"),
        ("0-1", "0-0"),
        ("0-0", "0-0"),
    ],
)
def test_previous_id(entry_id: str, expected: str) -> None:
    """The id right before an id, borrowing from the milliseconds at sequence 0."""
    assert previous_id(entry_id) == expected


_P = PendingEntry


@pytest.mark.parametrize(
    ("last", "pending", "oldest", "expected"),
    [
        ("9-0", [], None, GroupStart("9-0")),
        ("9-0", [_P("4-0", "a", 2)], None, GroupStart("9-0", (_P("4-0", "a", 2),))),
        (
            "9-0",
            [_P("4-0", "a", 2), _P("9-0", "b", 1), _P("9-1", "b", 1)],
            None,
            GroupStart("9-0", (_P("4-0", "a", 2), _P("9-0", "b", 1))),
        ),
        ("9-0", None, "4-0", GroupStart(f"3-{_MAX_SEQ}")),
        ("9-0", None, "4-7", GroupStart("4-6")),
        ("9-0", None, None, GroupStart("9-0")),
    ],
    ids=[
        "all-acked",
        "pending-put-back",
        "delivered-while-read-not-put-back",
        "too-many-pending-start-before-oldest",
        "too-many-pending-sequence",
        "pending-acked-meanwhile",
    ],
)
def test_recreated_group_starts_where_nothing_unacknowledged_is_skipped(
    last: str, pending: list[PendingEntry] | None, oldest: str | None, expected: GroupStart
) -> None:
    """A lost group comes back at its last delivered id with its pending entries, or just
    before the oldest pending entry when there are too many to put back."""
    assert start_of(last, pending, oldest) == expected


# --- trimming while entries are pending ---------------------------------------------------------


async def test_retention_keeps_what_a_crashed_stage_holds_and_each_file_is_detected_once(
    engine: AsyncEngine,
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
    detector: EmbeddedDetector,
) -> None:
    """12 old files, projected: detect acked 4, a crashed worker holds 4, 4 were never read.
    Retention trims the 4 acked only; while the reclaimer and a worker catch up, retention runs
    every round and never trims what detect still needs; in the end each file has one
    detection (lost 0, duplicated 0) and the stream is trimmed empty."""
    redis = redis_client
    files = names.files(CAMERA)
    for group in (Group.DETECT, Group.PROJECT):
        await ensure_group(redis, files, group.value)
    ids = await _publish_files(redis, names, camera_root, range(12), id_ms=_old_ms())
    project = ProjectStage(redis, names, Projector(engine, names))
    while entries := await _read(redis, files, Group.PROJECT.value, "projector", 100):
        await project.handle(files, entries)
    stage = DetectStage(redis=redis, names=names, detector=detector, camera_root=camera_root)
    done = await _read(redis, files, Group.DETECT.value, "worker", 4)
    assert not (await stage.handle(files, done)).failed
    held = await _read(redis, files, Group.DETECT.value, "crashed", 4)  # then it died
    assert [i for i, _ in held] == ids[4:8]

    report = await _retention(engine, redis, names)

    assert _trim_of(report, files) == (ids[4], 4)
    assert await _ids(redis, files) == ids[4:]
    assert [p[0] for p in await _pending(redis, files, Group.DETECT.value)] == ids[4:8]

    reclaimer = Reclaimer(
        redis,
        names,
        group=Group.DETECT.value,
        streams=[files],
        config=_reclaim_config(),
        consumer="reclaimer",
        handler=stage.handle,
    )
    stats = ReclaimStats()
    rounds = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        assert loop.time() < deadline, "detect did not catch up"
        rounds += 1
        stats += await reclaimer.run_once()
        fresh = await _read(redis, files, Group.DETECT.value, "worker", 2)
        if fresh:
            await stage.handle(files, fresh)
        await _retention(engine, redis, names)
        detected = set(await _detected_files(redis, names))
        on_stream = set(await _ids(redis, files))
        assert {i for i in ids if i not in detected} <= on_stream, "trimmed before detection"
        if await _caught_up(redis, files, Group.DETECT.value):
            break

    detections = await _detected_files(redis, names)
    print(f"rounds={rounds} reclaimed={stats.rerun} detections={len(detections)}")
    assert Counter(detections) == Counter(ids)  # lost 0, duplicated 0
    assert stats.rerun == 4
    assert stats.deleted == 0  # no pending entry was trimmed under the reclaimer
    assert stats.dead == 0
    assert await redis.xlen(files) == 0  # all acknowledged by both groups: all trimmed
    assert await _rows(engine, "SELECT count(*) FROM media_files") == 12


async def test_retention_waits_for_a_lagging_projector_and_each_entry_is_applied_once(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames, camera_root: Path
) -> None:
    """12 old files, all detected: the projector applied 3, a crashed projector holds 3, 6 were
    never read. Retention trims the 3 applied only, keeping their rows and the tracking rows of
    the others; catching up (reclaimer + projector, retention every round) applies every entry
    exactly once, and nothing is ever trimmed before it is applied."""
    redis = redis_client
    files = names.files(CAMERA)
    for group in (Group.DETECT, Group.PROJECT):
        await ensure_group(redis, files, group.value)
    ids = await _publish_files(redis, names, camera_root, range(12), id_ms=_old_ms())
    # The detect stage is done with every file.
    read = await _read(redis, files, Group.DETECT.value, "detector", 100)
    await redis.xack(files, Group.DETECT.value, *[i for i, _ in read])
    handler = Applied(ProjectStage(redis, names, Projector(engine, names)))
    await handler(files, await _read(redis, files, Group.PROJECT.value, "projector", 3))
    held = await _read(redis, files, Group.PROJECT.value, "crashed", 3)  # then it died
    assert [i for i, _ in held] == ids[3:6]

    report = await _retention(engine, redis, names)

    assert _trim_of(report, files) == (ids[3], 3)
    assert await _ids(redis, files) == ids[3:]
    assert report.rows["projection_checkpoints"] == 3
    assert report.rows["media_files"] == 0  # captured now: not old enough to go

    reclaimer = Reclaimer(
        redis,
        names,
        group=Group.PROJECT.value,
        streams=[files],
        config=_reclaim_config(),
        consumer="reclaimer",
        handler=handler,
    )
    stats = ReclaimStats()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        assert loop.time() < deadline, "the projector did not catch up"
        stats += await reclaimer.run_once()
        fresh = await _read(redis, files, Group.PROJECT.value, "projector", 2)
        if fresh:
            await handler(files, fresh)
        await _retention(engine, redis, names)
        on_stream = set(await _ids(redis, files))
        assert {i for i in ids if i not in handler.applied} <= on_stream, "trimmed unapplied"
        if await _caught_up(redis, files, Group.PROJECT.value):
            break

    print(f"applied={sum(handler.applied.values())} reclaimed={stats.rerun}")
    assert handler.applied == Counter(ids)  # every entry applied exactly once
    assert not handler.skipped  # and never offered twice
    assert (stats.rerun, stats.deleted, stats.dead) == (3, 0, 0)
    assert await _rows(engine, "SELECT count(*) FROM media_files") == 12
    assert await redis.xlen(files) == 0


# --- consumer groups lost at run time -----------------------------------------------------------


@pytest.fixture
async def pipeline(
    redis_client: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    engine: AsyncEngine,
    key_prefix: str,
    camera_root: Path,
) -> AsyncIterator[Pipeline]:
    """The detect and project stages with their reclaimers, in this process (stopped before
    the test's keys are deleted)."""
    pipe = Pipeline(
        _settings(camera_root, key_prefix),
        redis_url,
        PipelineOptions(stages=(Group.DETECT, Group.PROJECT), discovery_interval_seconds=0.1),
        database_url=f"{database_url}?options=-csearch_path%3D{db_schema}",
    )
    await pipe.start()
    yield pipe
    await pipe.stop()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (`extra=` of the call that logged it)."""
    return {
        key: getattr(record, key)
        for key in ("stage", "camera", "stream", "start_id", "restored", "group_created")
        if hasattr(record, key)
    }


async def _settled(redis: Redis, names: StreamNames, engine: AsyncEngine, files: list[str]) -> bool:
    """Every file detected and projected (its media row and its detection's tracking row)."""
    detected = set(await _detected_files(redis, names))
    if not set(files) <= detected:
        return False
    rows = await _rows(engine, "SELECT count(*) FROM media_files")
    tracked = await _rows(engine, _TRACKED, stream=names.detections(CAMERA))
    return rows >= len(files) and tracked >= len(detected)


async def test_lost_detect_and_project_groups_come_back_where_they_were(
    pipeline: Pipeline,
    redis_client: Redis,
    names: StreamNames,
    engine: AsyncEngine,
    camera_root: Path,
    warnings_of: Callable[[str], list[logging.LogRecord]],
) -> None:
    """XGROUP DESTROY of `detect` and `project` on the files stream of a running pipeline, files
    added right after: both groups are recreated at the last file they had handled (not at `$`,
    not at 0), with a warning; the new files are detected and projected, and every file has one
    detection entry and one projected row (lost 0, duplicated 0)."""
    redis = redis_client
    files = names.files(CAMERA)
    first = await _publish_files(redis, names, camera_root, range(3))
    await _eventually(lambda: _settled(redis, names, engine, first))
    runners = [pipeline.runners[group, StreamKind.FILES] for group in (Group.DETECT, Group.PROJECT)]

    async def positions_seen() -> bool:
        return all(r.positions.get(files) == GroupStart(first[-1]) for r in runners)

    await _eventually(positions_seen)
    for group in (Group.DETECT, Group.PROJECT):
        await redis.xgroup_destroy(files, group.value)
    second = await _publish_files(redis, names, camera_root, range(3, 6))
    await _eventually(lambda: _settled(redis, names, engine, first + second))
    await pipeline.drain(TIMEOUT)

    detections = await _detected_files(redis, names)
    assert Counter(detections) == Counter(first + second)  # lost 0, duplicated 0
    assert await _rows(engine, "SELECT count(*) FROM media_files") == 6
    assert await _rows(engine, _TRACKED, stream=files) == 6
    recreated = sorted((_fields(r) for r in warnings_of("stage.group_recreated")), key=str)
    assert [(f["stage"], f["stream"], f["start_id"], f["group_created"]) for f in recreated] == [
        ("detect", files, first[-1], True),
        ("project", files, first[-1], True),
    ]
    for runner in runners:
        assert not runner.stopped
        info = await _group(redis, files, runner.group.value)
        assert info is not None
        assert (info["last-delivered-id"].decode(), info["pending"]) == (second[-1], 0)


async def test_deleted_stream_and_flushed_keys_do_not_stop_the_stages(
    pipeline: Pipeline,
    redis_client: Redis,
    names: StreamNames,
    engine: AsyncEngine,
    key_prefix: str,
    camera_root: Path,
    warnings_of: Callable[[str], list[logging.LogRecord]],
) -> None:
    """The files stream DELeted under the running stages: both groups come back from 0 on a
    new stream, and later files are processed. Then every key of the installation deleted (a
    flush) and files published at once: whatever recreates the streams first, the groups come
    back before the new files, which are processed once each, and no stage stops."""
    redis = redis_client
    files = names.files(CAMERA)
    first = await _publish_files(redis, names, camera_root, range(2))
    await _eventually(lambda: _settled(redis, names, engine, first))

    def recreated_on(stream: str) -> list[dict[str, Any]]:
        records = warnings_of("stage.group_recreated")
        return [f for f in map(_fields, records) if f["stream"] == stream]

    async def both_back() -> bool:
        return len(recreated_on(files)) == 2 and not any(r.stopped for r in runners)

    runners = [pipeline.runners[group, StreamKind.FILES] for group in (Group.DETECT, Group.PROJECT)]
    await redis.delete(files)
    await _eventually(both_back)
    assert sorted((f["stage"], f["start_id"]) for f in recreated_on(files)) == [
        ("detect", "0"),
        ("project", "0"),
    ]
    second = await _publish_files(redis, names, camera_root, range(2, 4))
    await _eventually(lambda: _settled(redis, names, engine, first + second))
    assert Counter(await _detected_files(redis, names)) == Counter(first + second)

    keys = [key async for key in redis.scan_iter(match=f"{key_prefix}:*", count=1000)]
    assert names.detections(CAMERA).encode() in keys
    before = len(warnings_of("stage.group_recreated"))
    await redis.delete(*keys)
    third = await _publish_files(redis, names, camera_root, range(4, 6))

    async def flushed_settled() -> bool:
        return await _settled(redis, names, engine, third) and (
            await _rows(engine, "SELECT count(*) FROM media_files") == 6
        )

    await _eventually(flushed_settled)
    await pipeline.drain(TIMEOUT)
    assert Counter(await _detected_files(redis, names)) == Counter(third)  # lost 0, twice 0
    assert await _rows(engine, "SELECT count(*) FROM media_files") == 6
    after_flush = [_fields(r) for r in warnings_of("stage.group_recreated")[before:]]
    assert {f["stage"] for f in after_flush} == {"detect", "project"}
    assert all(id_key(f["start_id"]) < id_key(third[0]) for f in after_flush)
    assert not any(runner.stopped for runner in pipeline.runners.values())
    print(f"recreations after the flush={len(after_flush)}")


def _worker_env(redis_url: str, prefix: str, root: Path, data: Path) -> dict[str, str]:
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.update(
        REDIS_URL=redis_url,
        STREAM_PREFIX=prefix,
        FOSCAM_BASE_PATH=str(root),
        DATA_DIR=str(data),
        STREAM_BLOCK_MS="100",
        STREAM_RECLAIM_INTERVAL_SECONDS="60",
        METRICS_PORT="0",
        LOG_FORMAT="plain",
    )
    return env


@pytest.fixture
def worker(
    redis_url: str, key_prefix: str, camera_root: Path, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """An `hsi worker --stage detect` process, stopped with SIGINT afterwards."""
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "hsi.cli", "worker", "--stage", "detect"],
        cwd=tmp_path,
        env=_worker_env(redis_url, key_prefix, camera_root, tmp_path / "data"),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
    log.close()


async def test_hsi_worker_survives_its_group_being_destroyed(
    worker: subprocess.Popen[str],
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
    tmp_path: Path,
) -> None:
    """`hsi worker --stage detect` reading its camera: XGROUP DESTROY, then files published. The
    process logs the recreation, keeps running, detects each file once, and stops cleanly."""
    redis = redis_client
    files = names.files(CAMERA)
    await redis.sadd(names.camera_set, CAMERA)

    async def reading() -> bool:
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        if await _group(redis, files, Group.DETECT.value) is None:
            return False
        # Subscribed (a blocked XREADGROUP on an empty stream shows no consumer on Redis 7.0).
        return "pipeline.started" in (tmp_path / "worker.log").read_text(errors="replace")

    await _eventually(reading, seconds=60)
    await redis.xgroup_destroy(files, Group.DETECT.value)
    ids = await _publish_files(redis, names, camera_root, range(3))

    async def detected() -> bool:
        return len(await _detected_files(redis, names)) >= len(ids)

    await _eventually(detected)
    assert worker.poll() is None  # still running
    info = await _group(redis, files, Group.DETECT.value)
    assert info is not None
    assert (info["last-delivered-id"].decode(), info["pending"]) == (ids[-1], 0)
    assert Counter(await _detected_files(redis, names)) == Counter(ids)
    worker.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(worker.wait, TIMEOUT) == 0
    output = (tmp_path / "worker.log").read_text()
    assert "stage.group_recreated" in output, output
    assert "pipeline.stopped" in output, output


# --- the reclaimer ------------------------------------------------------------------------------


async def test_reclaimer_recreates_a_destroyed_group_with_its_pending_entries(
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
    detector: EmbeddedDetector,
    warnings_of: Callable[[str], list[logging.LogRecord]],
) -> None:
    """A worker acked 2 files and died holding 2; 2 were never read. After XGROUP DESTROY the
    reclaimer's round recreates the group at the 4th file with the 2 held ones pending again
    (same consumer, same delivery count): a new reader gets only the 2 unread files, the
    reclaimer re-runs the 2 held ones, and each file is detected once."""
    redis = redis_client
    files = names.files(CAMERA)
    await ensure_group(redis, files, Group.DETECT.value)
    ids = await _publish_files(redis, names, camera_root, range(6))
    stage = DetectStage(redis=redis, names=names, detector=detector, camera_root=camera_root)
    taken = await _read(redis, files, Group.DETECT.value, "worker", 4)
    await stage.handle(files, taken[:2])  # and it dies holding the next two
    patient = Reclaimer(
        redis,
        names,
        group=Group.DETECT.value,
        streams=[files],
        config=_reclaim_config(idle_ms=60_000),
        consumer="reclaimer",
        handler=stage.handle,
    )
    assert await patient.run_once() == ReclaimStats()  # nothing idle enough yet

    await redis.xgroup_destroy(files, Group.DETECT.value)
    assert await patient.run_once() == ReclaimStats()

    [record] = warnings_of("reclaim.group_recreated")
    fields = record.hsi_fields  # type: ignore[attr-defined]  # set via `extra`
    assert (fields["stream"], fields["start_id"], fields["restored"]) == (files, ids[3], 2)
    assert await _pending(redis, files, Group.DETECT.value) == [
        (ids[2], "worker", 1),
        (ids[3], "worker", 1),
    ]
    fresh = await _read(redis, files, Group.DETECT.value, "worker-2", 100)
    assert [i for i, _ in fresh] == ids[4:]
    await stage.handle(files, fresh)
    eager = Reclaimer(
        redis,
        names,
        group=Group.DETECT.value,
        streams=[files],
        config=_reclaim_config(),
        consumer="reclaimer",
        handler=stage.handle,
    )
    assert await _reclaim_until(eager, rerun=2) == ReclaimStats(claimed=2, rerun=2)
    assert Counter(await _detected_files(redis, names)) == Counter(ids)
    assert await _pending(redis, files, Group.DETECT.value) == []


async def test_reclaimer_recreates_the_group_of_a_deleted_stream_from_its_start(
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
    detector: EmbeddedDetector,
    warnings_of: Callable[[str], list[logging.LogRecord]],
) -> None:
    """The stream (and with it the group and its pending entries) is gone, as after a flush: the
    reclaimer recreates the group from 0 on a new empty stream, and files published afterwards
    are read and detected once."""
    redis = redis_client
    files = names.files(CAMERA)
    await ensure_group(redis, files, Group.DETECT.value)
    await _publish_files(redis, names, camera_root, range(2))
    await _read(redis, files, Group.DETECT.value, "crashed", 2)
    stage = DetectStage(redis=redis, names=names, detector=detector, camera_root=camera_root)
    reclaimer = Reclaimer(
        redis,
        names,
        group=Group.DETECT.value,
        streams=[files],
        config=_reclaim_config(idle_ms=60_000),
        consumer="reclaimer",
        handler=stage.handle,
    )
    await reclaimer.run_once()
    await redis.delete(files)

    assert await reclaimer.run_once() == ReclaimStats()

    [record] = warnings_of("reclaim.group_recreated")
    fields = record.hsi_fields  # type: ignore[attr-defined]  # set via `extra`
    assert (fields["start_id"], fields["restored"], fields["group_created"]) == ("0", 0, True)
    info = await _group(redis, files, Group.DETECT.value)
    assert info is not None
    assert (info["last-delivered-id"], info["pending"]) == (b"0-0", 0)
    ids = await _publish_files(redis, names, camera_root, range(2, 4))
    fresh = await _read(redis, files, Group.DETECT.value, "worker", 100)
    assert [i for i, _ in fresh] == ids
    await stage.handle(files, fresh)
    assert Counter(await _detected_files(redis, names)) == Counter(ids)


class _LosesGroupAfterClaim(Redis):
    """The real client, with one fault: right after its next XAUTOCLAIM the group is destroyed,
    so the reclaimer's XPENDING that follows meets NOGROUP."""

    armed = False

    async def xautoclaim(self, name: Any, groupname: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]  # passes everything on
        reply = await super().xautoclaim(name, groupname, *args, **kwargs)
        if self.armed:
            self.armed = False
            await self.xgroup_destroy(name, groupname)
        return reply


async def test_reclaimer_meeting_nogroup_on_xpending_loses_nothing(
    redis_url: str,
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
    detector: EmbeddedDetector,
    warnings_of: Callable[[str], list[logging.LogRecord]],
) -> None:
    """The group vanishes between the reclaimer's XAUTOCLAIM and its XPENDING: the round
    recreates it with the claimed entries pending again as before the claim, and the next round
    re-runs each of them once."""
    redis = redis_client
    files = names.files(CAMERA)
    await ensure_group(redis, files, Group.DETECT.value)
    ids = await _publish_files(redis, names, camera_root, range(4))
    await _read(redis, files, Group.DETECT.value, "crashed", 4)
    faulty = _LosesGroupAfterClaim.from_url(redis_url)
    try:
        stage = DetectStage(redis=redis, names=names, detector=detector, camera_root=camera_root)
        reclaimer = Reclaimer(
            faulty,
            names,
            group=Group.DETECT.value,
            streams=[files],
            config=_reclaim_config(),
            consumer="reclaimer",
            handler=stage.handle,
        )
        faulty.armed = True
        assert await reclaimer.run_once() == ReclaimStats(claimed=4)  # then NOGROUP

        [record] = warnings_of("reclaim.group_recreated")
        assert record.hsi_fields["restored"] == 4  # type: ignore[attr-defined]  # via `extra`
        assert await _pending(redis, files, Group.DETECT.value) == [(i, "crashed", 1) for i in ids]
        assert await _reclaim_until(reclaimer, rerun=4) == ReclaimStats(claimed=4, rerun=4)
    finally:
        await faulty.aclose()
    assert Counter(await _detected_files(redis, names)) == Counter(ids)
    assert await _pending(redis, files, Group.DETECT.value) == []

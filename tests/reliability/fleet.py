"""HSI worker processes for the crash and restart suites, and the checks of their end state.

`Fleet` runs `hsi worker --stage …` subprocesses on real servers, each with its log file, and
kills (SIGKILL), restarts and stops them. `make_files` writes distinct small JPEGs into camera
folders and `publish` takes them through the watcher's ingest path, as `hsi ingest` does.
`settled` polls PostgreSQL until every file is projected, detected, batched into an event and
analysed; `Tally` counts what the streams and tables hold at the end, so a test can say
"lost 0, duplicated 0" from the real state of Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.runner import build_watcher
from hsi.infra.redis import RedisClient, RedisConfig, create_redis
from hsi.settings.model import Settings
from streams.envelope import read_fields
from streams.names import StreamKind, StreamNames
from streams.schemas import DetectionCompleted
from streams.watch.outcomes import Outcome

REPOSITORY = Path(__file__).resolve().parents[2]
CAR = {
    "class": "car",
    "confidence": 0.8,
    "bbox": {"x": 5.0, "y": 6.0, "width": 40.0, "height": 30.0},
}


def worker_env(**values: str) -> dict[str, str]:
    """This process's environment without any HSI setting, plus `values` (upper-case names)."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env


def pipeline_env(
    redis_url: str, database_url: str, prefix: str, data_dir: Path, rtdetr_url: str
) -> dict[str, str]:
    """Settings for workers that tolerate being killed: short reclaim idle time, many deliveries
    allowed, batches closing full (25) or after 1 s idle, the fake RT-DETR as detector."""
    return worker_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        STREAM_PREFIX=prefix,
        DATA_DIR=str(data_dir),
        FOSCAM_BASE_PATH=str(data_dir / "cameras"),
        DETECTOR_BACKEND="rtdetr",
        RTDETR_URL=rtdetr_url,
        DETECTOR_READ_TIMEOUT_SECONDS="5",
        ANALYZER_BACKEND="rules",
        BATCH_MAX_DETECTIONS="25",
        BATCH_WINDOW_SECONDS="30",
        BATCH_IDLE_TIMEOUT_SECONDS="1",
        STREAM_RECLAIM_IDLE_MS="1500",
        STREAM_RECLAIM_INTERVAL_SECONDS="0.5",
        STREAM_MAX_DELIVERIES="1000",
        STREAM_READ_COUNT="100",
        STREAM_BLOCK_MS="500",
        REDIS_RETRY_ATTEMPTS="20",
        REDIS_RETRY_BACKOFF_CAP_SECONDS="1",
        REDIS_HEALTH_CHECK_INTERVAL_SECONDS="1",
        METRICS_PORT="0",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
        LOG_DB_ENABLED="false",
        OTEL_TRACES_SAMPLER_RATIO="0",
    )


@dataclass
class Fleet:
    """Named `hsi` subprocesses: started, killed, restarted and stopped by name."""

    env: Mapping[str, str]
    folder: Path
    commands: dict[str, list[str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: int = 0
    starts: int = 0

    def add(self, name: str, *args: str) -> None:
        self.commands[name] = [sys.executable, "-m", "hsi.cli", *args]
        self.start(name)

    def worker(self, name: str, *stages: str) -> None:
        args = ["worker"]
        for stage in stages:
            args += ["--stage", stage]
        self.add(name, *args)

    def log_path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start(self, name: str) -> None:
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                self.commands[name],
                env=dict(self.env),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.kills += 1

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def exited(self) -> dict[str, int]:
        """Processes that ended on their own: name → exit code."""
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGTERM to all, SIGKILL to what is left after `timeout`; name → exit code."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(5)
        return codes

    def logs(self, limit: int = 4000) -> str:
        """The end of every process's log, for a failed assertion's message."""
        parts = []
        for name in self.commands:
            content = self.log_path(name).read_text(errors="replace")
            parts.append(f"--- {name} ---\n{content[-limit:]}")
        return "\n".join(parts)

    def log_lines(self, name: str) -> list[str]:
        return self.log_path(name).read_text(errors="replace").splitlines()


def ingest_settings(camera_root: Path, prefix: str) -> Settings:
    """Settings for publishing the test's small JPEGs through the watcher's ingest route."""
    return Settings(
        foscam_base_path=camera_root,
        stream_prefix=prefix,
        min_image_size_bytes=0,
        watch_stable_seconds=0.01,
    )


def tiny_jpeg(seed: int) -> bytes:
    """A distinct 64×48 JPEG (the noise differs per seed, so does the SHA-256)."""
    picture = Image.effect_noise((64, 48), 40 + seed % 50).convert("RGB")
    picture.putpixel((seed % 64, (seed // 64) % 48), (seed % 256, (seed // 256) % 256, 7))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def make_files(root: Path, cameras: Iterable[str], per_camera: int, parts: int) -> list[Path]:
    """`per_camera` JPEGs in each camera folder, split over `parts` subfolders (publish units)."""
    made = []
    seed = 0
    for camera in cameras:
        for index in range(per_camera):
            folder = root / camera / f"part{index % parts}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"img{index:05d}.jpg"
            path.write_bytes(tiny_jpeg(seed))
            made.append(path)
            seed += 1
    return made


async def publish(settings: Settings, redis_url: str, folders: Iterable[Path]) -> list[Outcome]:
    """Each folder through the watcher's ingest route (what `hsi ingest` does)."""
    client = create_redis(RedisConfig(url=redis_url))
    try:
        watcher = build_watcher(settings, client)
        outcomes: list[Outcome] = []
        for folder in folders:
            outcomes.extend(await watcher.ingest(folder))
        return outcomes
    finally:
        await client.aclose()


@dataclass(frozen=True)
class Progress:
    files: int
    detections: int
    grouped: int
    analysed: int
    events: int

    def complete(self, expected: int) -> bool:
        return (
            self.files == expected
            and self.detections == expected
            and self.grouped == expected
            and self.analysed == self.events
            and self.events > 0
        )


async def progress(engine: AsyncEngine) -> Progress:
    """How far the projection is: files, detected files, files in events, analysed events."""
    async with engine.connect() as conn:
        migrated = await conn.scalar(text("SELECT to_regclass('event_detections') IS NOT NULL"))
        if not migrated:  # the workers have not migrated the database yet
            return Progress(0, 0, 0, 0, 0)
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM media_files),"
                    " (SELECT count(DISTINCT file_id) FROM detections),"
                    " (SELECT count(*) FROM event_detections),"
                    " (SELECT count(*) FROM events WHERE analysis_status = 'completed'),"
                    " (SELECT count(*) FROM events)"
                )
            )
        ).one()
    return Progress(*(int(value) for value in row))


async def settled(
    engine: AsyncEngine, expected: int, fleet: Fleet, within: float, poll: float = 0.5
) -> Progress:
    """Wait until every file went the whole way (or fail with the fleet's logs)."""
    deadline = time.monotonic() + within
    last = await progress(engine)
    while not last.complete(expected):
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {within:.0f} s: {last}\n{fleet.logs()}")
        await asyncio.sleep(poll)
        last = await progress(engine)
    return last


@dataclass(frozen=True)
class Tally:
    """What the streams and the tables hold at the end."""

    file_entries: int
    detection_entries: int
    detection_files: int
    batch_entries: int
    analysis_entries: int
    dead_entries: int
    pending: int
    media_rows: int
    detection_entry_rows: int
    event_rows: int
    event_files: int
    distinct_event_files: int
    event_detection_total: int

    def lost_and_duplicated(self, files: int) -> tuple[int, int]:
        """(lost, duplicated) files over every hop: a file missing from any hop is lost, a file
        counted more than once in any hop is duplicated."""
        counts = [
            self.file_entries,
            self.detection_entries,
            self.detection_files,
            self.media_rows,
            self.detection_entry_rows,
            self.event_files,
            self.event_detection_total,
        ]
        lost = max(files - min(counts), files - self.distinct_event_files, 0)
        duplicated = max(max(counts) - files, self.event_files - self.distinct_event_files, 0)
        return lost, duplicated


async def _stream_total(
    redis: RedisClient, names: StreamNames, cameras: Iterable[str], kind: StreamKind
) -> int:
    total = 0
    for camera in cameras:
        total += int(await redis.xlen(names.stream(camera, kind)))
    return total


async def _detection_files(redis: RedisClient, names: StreamNames, cameras: Iterable[str]) -> int:
    """Distinct source files among the detection entries (each names its file entry)."""
    sources: set[tuple[str, str]] = set()
    for camera in cameras:
        entries: Any = await redis.xrange(names.detections(camera))
        for _, fields in entries:
            entry, _ = read_fields(fields)
            assert isinstance(entry, DetectionCompleted), entry
            sources.add((camera, entry.file_entry_id))
    return len(sources)


async def _pending(redis: RedisClient, names: StreamNames, cameras: Iterable[str]) -> int:
    """Entries read but not acknowledged, over every group of every stream of the cameras."""
    total = 0
    for camera in cameras:
        for kind in StreamKind:
            stream = names.stream(camera, kind)
            if await redis.exists(stream):
                total += sum(int(g["pending"]) for g in await redis.xinfo_groups(stream))
    return total


async def tally(
    redis: RedisClient, engine: AsyncEngine, names: StreamNames, cameras: list[str]
) -> Tally:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM media_files),"
                    " (SELECT count(DISTINCT (camera_id, detection_entry_id)) FROM detections),"
                    " (SELECT count(*) FROM events),"
                    " (SELECT count(*) FROM event_detections),"
                    " (SELECT count(DISTINCT (camera_id, file_entry_id)) FROM event_detections),"
                    " (SELECT coalesce(sum(detection_count), 0) FROM events)"
                )
            )
        ).one()
    media, detection_rows, events, event_files, distinct_event_files, total = (
        int(value) for value in row
    )
    return Tally(
        file_entries=await _stream_total(redis, names, cameras, StreamKind.FILES),
        detection_entries=await _stream_total(redis, names, cameras, StreamKind.DETECTIONS),
        detection_files=await _detection_files(redis, names, cameras),
        batch_entries=await _stream_total(redis, names, cameras, StreamKind.BATCHES),
        analysis_entries=await _stream_total(redis, names, cameras, StreamKind.ANALYSES),
        dead_entries=await _stream_total(redis, names, cameras, StreamKind.DEAD),
        pending=await _pending(redis, names, cameras),
        media_rows=media,
        detection_entry_rows=detection_rows,
        event_rows=events,
        event_files=event_files,
        distinct_event_files=distinct_event_files,
        event_detection_total=total,
    )

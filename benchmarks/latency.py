"""B2 latency: a complete image written into a camera folder → its scored event in `/api/events`.

`C` cameras each get a new JPEG (640×360, ~30 KB, each one distinct) every 0.5 s, the cameras
spread evenly over the half second, for `D` seconds per round; the full run measures the
target's load (20 cameras) and a lighter one (10 cameras). Each file holds a confident person
(zero-cost detector), so it takes the fast path: one file, one event. A poller asks
`GET /api/events?limit=50` every 20 ms and notes when each event first shows up with its
analysis (`analysis_status` completed). One file and event per camera are sent first and
awaited, so cameras are registered and subscribed before the clock runs.

HSI: what `hsi up` runs, in this process: the watcher (inotify, default settings: a file whose
writer closed it and that decodes completely is taken at once; the stability wait of
`WATCH_STABLE_SECONDS` is for files that are not closed or do not decode), the pipeline (every
stage; telemetry as `hsi up`), and the API in a process of its own (`benchmarks.apiserver`), so
that answering the polls does not share the pipeline's event loop. The poller (HSI's and the
floor's) runs on a thread with an event loop of its own: on the pipeline's loop its answers
would be noted only once the pipeline's ready callbacks had run.

Floor: watchdog (inotify, `closed` events) → read and hash the file → XADD → the raw pipeline
(`benchmarks.floor`, fast path, blocking reads) → the same tables; the poller runs the API's
listing SQL through psycopg at the same interval.

The stage breakdown comes from the projected rows: written (this process's clock) → observed
(`media_files.observed_at`) → detected (`detected_at`) → analysed (`events.analyzed_at`) →
projected (`projection_checkpoints.applied_at` of the analysis: its transaction's start) → seen
by the poller.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from struct import pack
from typing import Any

import orjson
import psycopg
from PIL import Image, ImageDraw
from redis.asyncio import Redis
from watchdog.events import FileClosedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from benchmarks.apiserver import serve
from benchmarks.environment import Servers, fresh_round
from benchmarks.fakes import CONFIDENT_PERSON
from benchmarks.floor import FIELD, RawPipeline, now_iso
from benchmarks.http import Connection
from benchmarks.options import Options
from benchmarks.query import free_port
from benchmarks.report import Figure, Target, cost, median, percentile, record
from benchmarks.throughput import cameras as camera_ids
from benchmarks.throughput import running_pipeline, settings_for
from hsi.settings.components import watch_config
from streams.names import StreamNames
from streams.watch.watcher import Watcher

NAME = "latency"
FILES_PER_SECOND = 2.0  # per camera
POLL_SECONDS = 0.02
STABLE_SECONDS = 1.0  # the default
STAGES = ("watch", "detect", "batch+analyze", "project", "visible")

_BREAKDOWN = """
SELECT m.path, m.observed_at, m.detected_at, e.id, e.analyzed_at, c.applied_at
FROM media_files m
JOIN event_detections d ON d.camera_id = m.camera_id AND d.file_entry_id = m.entry_id
JOIN events e ON e.id = d.event_id
LEFT JOIN projection_checkpoints c
  ON c.entry_id = e.analysis_entry_id
 AND c.stream = %(prefix)s || ':{' || m.camera_id || '}:analyses'
"""
_FLOOR_POLL = """
SELECT id, analysis_status FROM events WHERE window_start IS NOT NULL
ORDER BY window_start DESC, id DESC LIMIT 50
"""


def loads(options: Options) -> list[tuple[int, float]]:
    """(cameras, seconds of uploads per round) of each load: the target's 20 cameras, and a
    lighter one that one HSI process keeps up with here."""
    return options.pick(full=[(20, 12.0), (10, 6.0)], quick=[(10, 2.0)], smoke=[(2, 1.0)])


def base_jpeg() -> bytes:
    picture = Image.new("RGB", (640, 360), (40, 60, 80))
    draw = ImageDraw.Draw(picture)
    for index in range(0, 640, 16):
        draw.line((index, 0, 640 - index, 360), fill=(index % 256, 120, 200 - index % 200))
    draw.rectangle((260, 90, 380, 330), fill=(200, 170, 150))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def unique_jpeg(base: bytes, label: str) -> bytes:
    """`base` with a JPEG comment segment naming `label`: distinct content, same picture."""
    comment = label.encode()
    return base[:2] + b"\xff\xfe" + pack(">H", len(comment) + 2) + comment + base[2:]


@dataclass
class Run:
    """One measured round: when each file was written, when each event was seen."""

    written: dict[str, float] = field(default_factory=dict)  # relative path → epoch seconds
    seen: dict[str, float] = field(default_factory=dict)  # event id → epoch seconds
    expected: int = 0


async def upload(root: Path, cameras: Sequence[str], seconds: float, run: Run, tag: str) -> None:
    """Write each camera's files on schedule (cameras staggered over the period)."""
    base = base_jpeg()
    period = 1.0 / FILES_PER_SECOND
    count = max(1, round(seconds * FILES_PER_SECOND))
    schedule = sorted(
        (k * period + index * period / len(cameras), camera, k)
        for index, camera in enumerate(cameras)
        for k in range(count)
    )
    run.expected += len(schedule)
    data = {(c, k): unique_jpeg(base, f"{tag}-{c}-{k}") for _, c, k in schedule}
    started = time.perf_counter()
    for offset, camera, k in schedule:
        delay = started + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        relative = f"{camera}/IMG_{tag}_{k:05d}.jpg"
        run.written[relative] = time.time()
        (root / relative).write_bytes(data[camera, k])


async def poll_api(base: str, run: Run, stop: threading.Event) -> None:
    connection = await Connection(base).open()
    try:
        while not stop.is_set():
            body = orjson.loads(await connection.get("/api/events", {"limit": "50"}))
            now = time.time()
            for item in body["items"]:
                if item["analysis_status"] == "completed" and item["id"] not in run.seen:
                    run.seen[item["id"]] = now
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await connection.close()


async def poll_sql(conninfo: str, run: Run, stop: threading.Event) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            rows = await (await conn.execute(_FLOOR_POLL)).fetchall()
            now = time.time()
            for event_id, status in rows:
                if status == "completed" and str(event_id) not in run.seen:
                    run.seen[str(event_id)] = now
            await asyncio.sleep(POLL_SECONDS)


async def _polling(poller: Any, run: Run, stop: threading.Event) -> None:
    """Run `poller(run, stop)` on a thread with an event loop of its own until `stop` is set.
    On this process's loop its answers would wait behind the pipeline's callbacks (HSI's) or
    the raw pipeline's (the floor's) before being noted, which is not when the event was
    there to be seen; a browser does not share HSI's loop either."""
    failed: list[BaseException] = []

    def poll() -> None:
        try:
            asyncio.run(poller(run, stop))
        except BaseException as exc:  # handed to the awaiting task
            failed.append(exc)

    thread = threading.Thread(target=poll, name="hsi-bench-poller", daemon=True)
    thread.start()
    await asyncio.to_thread(thread.join)
    if failed:
        raise failed[0]


async def until_seen(run: Run, count: int, within_seconds: float) -> None:
    """Wait until `count` events were seen (or give up after `within_seconds`)."""
    deadline = time.perf_counter() + within_seconds
    while time.perf_counter() < deadline:
        if len(run.seen) >= count:
            return
        await asyncio.sleep(0.05)


@dataclass
class Latencies:
    total_ms: list[float]  # written → seen, per file
    after_watch_ms: list[float]  # observed → seen, per file
    stages_ms: dict[str, list[float]]
    missing: int


async def latencies(conninfo: str, prefix: str, run: Run, skip: set[str]) -> Latencies:
    """Per file: written → seen, and the stages in between (from the projected rows)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        rows = await (await conn.execute(_BREAKDOWN, {"prefix": prefix})).fetchall()
    totals: list[float] = []
    after_watch: list[float] = []
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    found = 0
    for path, observed, detected, event_id, analyzed, applied in rows:
        if path in skip or path not in run.written:
            continue
        found += 1
        written, seen = run.written[path], run.seen.get(str(event_id))
        if seen is None:
            continue
        moments = [written, *(_epoch(m) for m in (observed, detected, analyzed, applied)), seen]
        totals.append((seen - written) * 1000)
        if observed is not None:
            after_watch.append((seen - observed.timestamp()) * 1000)
        for stage, (start, end) in zip(STAGES, itertools.pairwise(moments), strict=True):
            if start is not None and end is not None:
                stages[stage].append((end - start) * 1000)
    expected = len(run.written) - len(skip)
    return Latencies(totals, after_watch, stages, expected - len(totals) if found else expected)


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


@contextmanager
def camera_root(cameras: Sequence[str]) -> Iterator[Path]:
    """A temporary camera root with an empty folder per camera; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hsi-bench-latency-") as folder:
        root = Path(folder) / "cameras"
        for camera in cameras:
            (root / camera).mkdir(parents=True)
        yield root


# --- HSI ------------------------------------------------------------------------------------


async def measure_hsi(servers: Servers, cameras: Sequence[str], seconds: float) -> Latencies:
    async with fresh_round(servers) as (redis, prefix, schema):
        with camera_root(cameras) as root:
            settings = settings_for(prefix, root, watch_stable_seconds=STABLE_SECONDS)
            async with running_pipeline(servers, settings, schema, CONFIDENT_PERSON) as pipeline:
                watcher = Watcher(redis, pipeline.names, root, watch_config(settings))
                await watcher.start()
                try:
                    with serve(
                        servers.database_url, schema, servers.redis_url, free_port(), prefix=prefix
                    ) as base:
                        return await _rounds(
                            root,
                            cameras,
                            seconds,
                            lambda run, stop: poll_api(base, run, stop),
                            servers.conninfo(schema),
                            prefix,
                            warm=pipeline.discover,
                        )
                finally:
                    await watcher.stop()


async def _rounds(
    root: Path,
    cameras: Sequence[str],
    seconds: float,
    poller: Any,
    conninfo: str,
    prefix: str,
    *,
    warm: Any = None,
) -> Latencies:
    run = Run()
    stop = threading.Event()
    polling = asyncio.create_task(_polling(poller, run, stop))
    try:
        # Warm-up: one file per camera registers it; wait until the pipeline follows them all.
        await upload(root, cameras, 1.0 / FILES_PER_SECOND, run, "warm")
        if warm is not None:
            await asyncio.sleep(0.5)
            await warm()
        await until_seen(run, len(cameras), within_seconds=60)
        skip = set(run.written)
        await upload(root, cameras, seconds, run, "run")
        await until_seen(run, run.expected, within_seconds=60)
    finally:
        stop.set()
        await polling
    return await latencies(conninfo, prefix, run, skip)


# --- floor ----------------------------------------------------------------------------------


class _Closed(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
        self._loop = loop
        self._queue = queue

    def dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent) and not event.is_directory:
            path = event.src_path
            self._loop.call_soon_threadsafe(
                self._queue.put_nowait, path if isinstance(path, str) else path.decode()
            )


async def _floor_watch(
    root: Path, redis: Redis, names: StreamNames, queue: asyncio.Queue[str]
) -> None:
    while True:
        path = Path(await queue.get())
        relative = path.relative_to(root).as_posix()
        camera = relative.split("/", 1)[0]
        data = await asyncio.to_thread(path.read_bytes)
        now = now_iso()
        body = {
            "camera_id": camera,
            "path": relative,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "mime": "image/jpeg",
            "media_kind": "image",
            "captured_at": now,
            "capture_source": "mtime",
            "observed_at": now,
        }
        await redis.xadd(names.files(camera), {FIELD: orjson.dumps(body)})


async def measure_floor(servers: Servers, cameras: Sequence[str], seconds: float) -> Latencies:
    async with fresh_round(servers) as (redis, prefix, schema):
        with camera_root(cameras) as root:
            names = StreamNames(prefix)
            raw = RawPipeline(
                redis, servers.conninfo(schema), names, cameras, fast_path=True, count=100
            )
            await raw.start()
            queue: asyncio.Queue[str] = asyncio.Queue()
            observer = Observer()
            observer.schedule(_Closed(asyncio.get_running_loop(), queue), str(root), recursive=True)
            observer.start()
            watching = asyncio.create_task(_floor_watch(root, redis, names, queue))
            conninfo = servers.conninfo(schema)
            try:
                return await _rounds(
                    root,
                    cameras,
                    seconds,
                    lambda run, stop: poll_sql(conninfo, run, stop),
                    conninfo,
                    prefix,
                )
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
                observer.stop()
                await asyncio.to_thread(observer.join)
                await raw.stop()


def run(servers: Servers, options: Options) -> list[Figure]:
    figures: list[Figure] = []
    for camera_count, seconds in loads(options):
        figures += _load(servers, options, camera_count, seconds)
    return figures


def _load(servers: Servers, options: Options, camera_count: int, seconds: float) -> list[Figure]:
    cameras = camera_ids(camera_count)
    label = f"{camera_count} cameras × {FILES_PER_SECOND:g} files/s"
    p50 = cost(
        "B2",
        f"file written → scored event in /api/events, p50 ({label}, {seconds:g} s a round)",
        "ms",
        target=Target(max_value=30.0),
    )
    p99 = cost(
        "B2",
        f"file written → scored event in /api/events, p99 ({label})",
        "ms",
        target=Target(max_value=100.0),
    )
    after_watch = cost("B2", f"observed (watcher published) → scored event, p50 ({label})", "ms")
    hsi_stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    floor_stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    missing = [0, 0]
    for index in range(options.rounds):
        order = ("hsi", "floor") if index % 2 == 0 else ("floor", "hsi")
        for who in order:
            measure = measure_hsi if who == "hsi" else measure_floor
            result = asyncio.run(measure(servers, cameras, seconds))
            stages = hsi_stages if who == "hsi" else floor_stages
            for stage, values in result.stages_ms.items():
                stages[stage].append(median(values) if values else float("nan"))
            missing[who == "floor"] += result.missing
            after = result.after_watch_ms
            figures_values = (
                median(result.total_ms) if result.total_ms else float("nan"),
                percentile(result.total_ms, 0.99) if result.total_ms else float("nan"),
                median(after) if after else float("nan"),
            )
            record((p50, p99, after_watch), figures_values, floor=who == "floor")

    def breakdown(stages: dict[str, list[float]]) -> str:
        return ", ".join(f"{stage} {median(values):.1f}" for stage, values in stages.items())

    p50.note = (
        f"median ms per stage — HSI: {breakdown(hsi_stages)}; floor: {breakdown(floor_stages)}. "
        f"WATCH_STABLE_SECONDS={STABLE_SECONDS:g} (the default; closed files are taken at once); "
        f"poll every {POLL_SECONDS * 1000:.0f} ms; events never seen: HSI {missing[0]}, "
        f"floor {missing[1]}"
    )
    return [p50, p99, after_watch]

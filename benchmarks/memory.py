"""B5 memory: the RSS of `hsi up`, idle and while files flow through it.

`hsi up` runs as a subprocess, as an operator runs it (`python -m hsi.cli up`), on the
benchmark's servers (a fresh key prefix and schema), with its own watcher on a fresh camera
root and `DETECTOR_BACKEND=rtdetr` pointed at `benchmarks.fakes.serve_rtdetr` — a fake RT-DETR
service in this process that answers a car and a person without decoding, so HSI still reads
and uploads every file but detection costs nothing. Everything else is `hsi up`'s defaults
(INFO logs to a discarded stderr, telemetry on, the rules analyzer), except
`WATCH_STABLE_SECONDS` (0.05 s instead of 1 s, so files are taken without waiting).

Files: small distinct JPEGs (96×72, ~2 KB) written into 8 camera folders in chunks of 500, as
long as at most 1 000 are not yet detected (a backlog on disk would only measure the watcher's
queue). RSS is read from the process (psutil) once idle after start-up, and when 25 %, 50 %,
75 % and 100 % of the files are detected and their batches projected.

Floor: a Python process that imports the libraries `hsi up` loads (FastStream, redis-py,
psycopg, SQLAlchemy, Starlette, uvicorn, OpenTelemetry, Pillow, PyAV, numpy, …) and does
nothing: what HSI's own code and state add is the difference.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
from PIL import Image
from redis.asyncio import Redis

from benchmarks.apiserver import REPOSITORY, wait_ready
from benchmarks.environment import Servers, drop_keys, fresh_schema, new_prefix
from benchmarks.fakes import serve_rtdetr
from benchmarks.latency import unique_jpeg
from benchmarks.options import Options
from benchmarks.query import free_port
from benchmarks.report import Figure, Target, cost, rate, record
from benchmarks.timing import BenchmarkError
from hsi.settings.model import Settings

NAME = "memory"
CAMERAS = 8
CHUNK = 500
BACKLOG = 1000
MB = 1024 * 1024
POINTS = (0.25, 0.5, 0.75, 1.0)

FLOOR_IMPORTS = (
    "faststream.redis",
    "redis.asyncio",
    "psycopg",
    "psycopg_pool",
    "sqlalchemy.ext.asyncio",
    "starlette.applications",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.metrics",
    "opentelemetry.exporter.prometheus",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "prometheus_client",
    "watchdog.observers",
    "PIL.Image",
    "av",
    "numpy",
    "httpx",
    "orjson",
    "click",
    "jinja2",
    "pyftpdlib",
    "cryptography",
)

_DONE_SQL = (
    "SELECT (SELECT count(*) FROM media_files WHERE detection_status = 'completed'), "
    "(SELECT count(*) FROM events WHERE analysis_status = 'completed')"
)


def file_count(options: Options) -> int:
    """Files per round: a multiple of 200, so that every camera's batches close full."""
    if options.memory_files is not None:
        return options.memory_files
    return options.pick(full=12_000, quick=3_000, smoke=200)


def tiny_jpeg() -> bytes:
    picture = Image.effect_noise((96, 72), 64).convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def hsi_env(**values: str) -> dict[str, str]:
    """This process's environment without any HSI setting, plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env


def rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / MB


def floor_rss() -> float:
    """RSS of a process that imports `hsi up`'s libraries and does nothing else."""
    script = (
        "import importlib, os, psutil\n"
        f"for name in {FLOOR_IMPORTS!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "print(psutil.Process(os.getpid()).memory_info().rss)\n"
    )
    done = subprocess.run(  # noqa: S603 - the running interpreter with our own script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout.split()[-1]) / MB


async def _done(conninfo: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        row = await (await conn.execute(_DONE_SQL)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _feed(
    root: Path, total: int, conninfo: str, process: psutil.Process, within_seconds: float
) -> list[float]:
    """Write the files, keeping the backlog bounded; RSS at each point of `POINTS`."""
    base = tiny_jpeg()
    cameras = [f"cam_{index:02d}" for index in range(CAMERAS)]
    for camera in cameras:
        (root / camera).mkdir(parents=True, exist_ok=True)
    samples: list[float] = []
    written = 0
    deadline = time.monotonic() + within_seconds
    while len(samples) < len(POINTS):
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"hsi up detected {(await _done(conninfo))[0]} of {total} files within "
                f"{within_seconds:.0f} s"
            )
        detected, events = await _done(conninfo)
        while len(samples) < len(POINTS) and detected >= POINTS[len(samples)] * total:
            if POINTS[len(samples)] == 1.0 and events < total // 25:
                break  # the last batches are still on their way
            samples.append(rss_mb(process))
        if written < total and written - detected < BACKLOG:
            for index in range(written, min(total, written + CHUNK)):
                camera = cameras[index % CAMERAS]
                (root / camera / f"IMG_{index:07d}.jpg").write_bytes(unique_jpeg(base, f"{index}"))
            written = min(total, written + CHUNK)
            continue
        await asyncio.sleep(0.25)
    return samples


def measure_hsi(servers: Servers, total: int) -> tuple[float, list[float], float]:
    """(idle RSS, RSS at each point, files/s) of one `hsi up` run."""
    prefix = new_prefix()

    async def body() -> tuple[float, list[float], float]:
        async with fresh_schema(servers) as schema:
            with (
                tempfile.TemporaryDirectory(prefix="hsi-bench-memory-") as folder,
                serve_rtdetr() as rtdetr,
            ):
                root = Path(folder) / "cameras"
                root.mkdir()
                port = free_port()
                env = hsi_env(
                    REDIS_URL=servers.redis_url,
                    DATABASE_URL=servers.database_url_for(schema),
                    DATA_DIR=str(Path(folder) / "data"),
                    FOSCAM_BASE_PATH=str(root),
                    STREAM_PREFIX=prefix,
                    API_PORT=str(port),
                    DETECTOR_BACKEND="rtdetr",
                    RTDETR_URL=rtdetr,
                    WATCH_STABLE_SECONDS="0.05",
                    TIMEZONE="UTC",
                )
                command = [sys.executable, "-m", "hsi.cli", "up"]
                up = subprocess.Popen(  # noqa: S603, ASYNC220 - HSI's CLI; Popen returns at once
                    command,
                    cwd=folder,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", up, 60.0)
                    process = psutil.Process(up.pid)
                    await asyncio.sleep(3.0)  # settle: discovery, first gauges, GC
                    idle = rss_mb(process)
                    conninfo = servers.conninfo(schema)
                    started = time.monotonic()
                    points = await _feed(root, total, conninfo, process, within_seconds=900)
                    rate = total / (time.monotonic() - started)
                finally:
                    up.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.to_thread(up.wait, 60)
                    except subprocess.TimeoutExpired:
                        up.kill()
                        await asyncio.to_thread(up.wait, 10)
        return idle, points, rate

    try:
        return asyncio.run(body())
    finally:
        asyncio.run(_drop_prefix(servers, prefix))


async def _drop_prefix(servers: Servers, prefix: str) -> None:
    redis = Redis.from_url(servers.redis_url)
    try:
        await drop_keys(redis, prefix)
    finally:
        await redis.aclose()


def run(servers: Servers, options: Options) -> list[Figure]:
    total = file_count(options)
    idle = cost(
        "B5",
        "hsi up RSS, idle after start-up",
        "MB",
        target=Target(max_value=200.0),
        note="floor: python importing hsi up's libraries, running nothing",
    )
    after = cost(
        "B5", f"hsi up RSS after {total} files", "MB", floor=False, target=Target(max_value=200.0)
    )
    growth = cost(
        "B5",
        f"hsi up RSS growth from 25 % to 100 % of {total} files",
        "MB",
        floor=False,
        target=Target(max_value=10.0),
        note="'no growth', with 10 MB of allowance for allocator noise",
    )
    speed = rate(
        "B5", "hsi up files/s meanwhile (watcher, RT-DETR over HTTP)", "files/s", floor=False
    )
    # One round: RSS hardly varies between runs, and a run takes minutes.
    record([idle], [floor_rss()], floor=True)
    rss_idle, points, files_per_second = measure_hsi(servers, total)
    record(
        [idle, after, growth, speed],
        [rss_idle, points[-1], points[-1] - points[0], files_per_second],
    )
    after.note = "RSS at 0 / 25 / 50 / 75 / 100 % of the files (MB): " + " / ".join(
        f"{value:.0f}" for value in [rss_idle, *points]
    )
    return [idle, after, growth, speed]

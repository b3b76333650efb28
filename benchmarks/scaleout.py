"""B8 scale-out: B1's throughput with the stages in 1 or 2 worker processes, on 1 Redis or 3.

B1 runs every stage in one `Pipeline` inside the benchmark process. Here the stages run where a
deployment that scales out runs them: in `hsi worker` processes (`benchmarks.worker`: the same
boot and `Pipeline` as `hsi worker --stage all`, with B1's zero-cost detector), each owning its
share of the cameras (`--shard i/n`), on one Redis or on a three-node Redis Cluster on loopback
(`REDIS_CLUSTER`; the nodes are started as the test suite starts its own, `tests.fakes.cluster`).
Four variants, each a fresh key prefix and schema, taking turns in a rotating order per round:

- (a) 1 worker process, 1 Redis: the baseline, the "floor" column of every figure;
- (b) 2 worker processes (`--shard 0/2`, `--shard 1/2`), 1 Redis;
- (c) 1 worker process on the cluster;
- (d) 2 worker processes on the cluster.

The work and the end condition are B1's: `N` files over `C` cameras published by the benchmark
process as `hsi ingest` publishes them (64 in flight, each in its `watch` span), batches that
close full, files/s from the first publish to every file detected and every event analysed in
PostgreSQL (one server in every variant). The clock starts once every worker reads every
stage's stream of its cameras (the groups exist, and a second more for the first reads). The
camera ids are B1's `cam_NN` names taken so that each shard owns half of them: `--shard` splits
by a CRC32 of the id, which puts `cam_00`…`cam_03` all in shard 0 of 2.

The ratio of a figure is the variant's files/s over (a)'s in the same round. The note gives,
per variant, the CPU each file cost (medians, ms): in the worker processes, in the publishing
benchmark process, in Redis (every node's INFO cpu), in PostgreSQL (the server's processes, when
it runs on this machine; shared servers count their other clients' work too) and on the whole
machine (every core's busy time, whatever ran), how many cores were busy on average, and
how much of a core the busiest worker process used (its asyncio loop runs Python on one core at
a time: near 100 % it is the bottleneck, whatever the cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from benchmarks.apiserver import REPOSITORY
from benchmarks.environment import Servers, drop_keys, fresh_schema, new_prefix
from benchmarks.memory import hsi_env
from benchmarks.options import Options
from benchmarks.report import Figure, median, rate
from benchmarks.throughput import (
    FILES_PER_BATCH,
    files_per_second,
    ingest,
    register_cameras,
    settings_for,
)
from benchmarks.throughput import sizes as b1_sizes
from benchmarks.timing import BenchmarkError
from hsi.infra.redis import RedisClient, RedisConfig, create_redis, per_node
from hsi.infra.telemetry import TelemetryConfig, reset_telemetry, setup_telemetry
from streams.names import Group, StreamKind, StreamNames
from streams.watch.ledger import Ledger

NAME = "scaleout"
SHARDS = 2
READY_SECONDS = 60.0
SETTLE_SECONDS = 1.0
# The busy parts of the machine's CPU times (Linux counts guest time in user; steal is not ours).
BUSY = ("user", "nice", "system", "irq", "softirq")
STOP_SECONDS = 60.0
# The groups reading each per-camera stream of B1's work (notify is off by default).
READERS: dict[StreamKind, tuple[Group, ...]] = {
    StreamKind.FILES: (Group.DETECT, Group.PROJECT),
    StreamKind.DETECTIONS: (Group.BATCH, Group.PROJECT),
    StreamKind.BATCHES: (Group.ANALYZE, Group.PROJECT),
    StreamKind.ANALYSES: (Group.PROJECT,),
}


@dataclass(frozen=True)
class Variant:
    processes: int
    cluster: bool

    @property
    def label(self) -> str:
        redis = "3-node Redis Cluster" if self.cluster else "1 Redis"
        return f"{self.processes} worker process{'es' if self.processes > 1 else ''}, {redis}"


BASELINE = Variant(1, cluster=False)
VARIANTS: tuple[Variant, ...] = (
    BASELINE,
    Variant(2, cluster=False),
    Variant(1, cluster=True),
    Variant(2, cluster=True),
)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far (or, as a difference, ms per file) of the parts of a measurement."""

    workers: float  # all worker processes together
    publisher: float  # this process
    redis: float  # every Redis node (INFO cpu)
    postgres: float  # the server's processes and those it reaped (NaN: not on this machine)
    machine: float  # every core of the machine busy, whatever ran on it

    def per_file(self, since: Cpu, files: int) -> Cpu:
        pairs = zip(astuple(self), astuple(since), strict=True)
        return Cpu(*(1000 * (now - then) / files for now, then in pairs))


@dataclass(frozen=True)
class Measured:
    files_per_second: float
    cpu: Cpu  # ms per file
    busiest_worker: float  # the busiest worker process's CPU seconds per second (1: a core)

    @property
    def cores_busy(self) -> float:
        """The machine's cores busy on average while the files went through."""
        return self.cpu.machine * self.files_per_second / 1000


def shard_of(camera: str, shards: int) -> int:
    """The shard `--shard i/n` gives a camera (`CameraSelection.owns`)."""
    return zlib.crc32(camera.encode()) % shards


def balanced_cameras(count: int, shards: int = SHARDS) -> list[str]:
    """`count` ids of the form `cam_NN`, the first of each shard, so that every shard owns
    `count / shards` of them (sorted)."""
    if count % shards:
        raise ValueError(f"{count} cameras do not split over {shards} shards")
    chosen: list[list[str]] = [[] for _ in range(shards)]
    index = 0
    while any(len(ids) < count // shards for ids in chosen):
        camera = f"cam_{index:02d}"
        ids = chosen[shard_of(camera, shards)]
        if len(ids) < count // shards:
            ids.append(camera)
        index += 1
    return sorted(camera for ids in chosen for camera in ids)


def sizes(options: Options) -> tuple[int, int]:
    """(files, cameras) of one measurement: B1's."""
    return b1_sizes(options)


def order(round_index: int) -> list[Variant]:
    """The variants of a round, rotated so that none always runs first or last."""
    shift = round_index % len(VARIANTS)
    return [*VARIANTS[shift:], *VARIANTS[:shift]]


@contextlib.contextmanager
def workers(
    env: dict[str, str], processes: int, folder: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`processes` worker processes (shard i of `processes` each, or all cameras for one),
    their output in `folder`; stopped by SIGTERM (as an operator stops them) afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        for index in range(processes):
            command = [sys.executable, "-m", "benchmarks.worker"]
            if processes > 1:
                command += ["--shard", f"{index}/{processes}"]
            log = (folder / f"worker-{index}.log").open("wb")
            logs.append(log)
            started.append(
                subprocess.Popen(  # noqa: S603 - the running interpreter with our own module
                    command, cwd=REPOSITORY, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for log in logs:
            log.close()


def _log_tail(folder: Path, index: int) -> str:
    return (folder / f"worker-{index}.log").read_text(errors="replace")[-2000:]


def _exited(processes: Sequence[subprocess.Popen[bytes]], folder: Path) -> str | None:
    for index, process in enumerate(processes):
        if process.poll() is not None:
            return f"worker {index} exited with {process.returncode}:\n{_log_tail(folder, index)}"
    return None


async def _groups_exist(redis: RedisClient, stream: str, groups: Sequence[Group]) -> bool:
    try:
        infos = await redis.xinfo_groups(stream)
    except RedisError:  # no such stream yet
        return False
    names = {i["name"].decode() if isinstance(i["name"], bytes) else i["name"] for i in infos}
    return all(group.value in names for group in groups)


async def wait_reading(
    redis: RedisClient,
    names: StreamNames,
    cameras: Sequence[str],
    processes: Sequence[subprocess.Popen[bytes]],
    folder: Path,
) -> None:
    """Until the workers read every stage's stream of every camera: each group exists (a
    worker creates it just before it starts reading the stream; an empty read leaves no trace
    in XINFO), then `SETTLE_SECONDS` for the first reads."""
    deadline = time.monotonic() + READY_SECONDS
    streams = [
        (names.stream(camera, kind), groups)
        for camera in cameras
        for kind, groups in READERS.items()
    ]
    while True:
        failure = _exited(processes, folder)
        if failure is not None:
            raise BenchmarkError(failure)
        ready = [await _groups_exist(redis, stream, groups) for stream, groups in streams]
        if all(ready):
            await asyncio.sleep(SETTLE_SECONDS)
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"the workers did not read {ready.count(False)} of {len(streams)} streams "
                f"within {READY_SECONDS:.0f} s; worker 0's output:\n{_log_tail(folder, 0)}"
            )
        await asyncio.sleep(0.1)


def _cpu_seconds(processes: Sequence[subprocess.Popen[bytes]]) -> list[float]:
    """Each process's CPU seconds so far."""
    seconds = []
    for process in processes:
        times = psutil.Process(process.pid).cpu_times()
        seconds.append(times.user + times.system)
    return seconds


async def postmaster(servers: Servers) -> psutil.Process | None:
    """The local PostgreSQL server's main process (the parent of a backend serving this
    process), or None when the server runs elsewhere."""
    async with await psycopg.AsyncConnection.connect(servers.conninfo()) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    try:
        parent = psutil.Process(int(row[0])).parent()
        local = parent is not None and parent.name().startswith("postgres")
    except psutil.Error:
        return None
    return parent if local else None


def _postgres_seconds(main: psutil.Process | None) -> float:
    """CPU seconds of the PostgreSQL server so far: its main process, the backends it runs and
    those it reaped; NaN when it runs elsewhere."""
    for _ in range(5):  # a backend may exit while its siblings are read
        if main is None:
            break
        try:
            times = main.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in main.children(recursive=True):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            break
        return total
    return math.nan


async def cpu_now(
    redis: RedisClient,
    processes: Sequence[subprocess.Popen[bytes]],
    postgres: psutil.Process | None,
) -> Cpu:
    if isinstance(redis, RedisCluster):
        reply: Any = await redis.info("cpu", target_nodes=RedisCluster.ALL_NODES)
    else:
        reply = await redis.info("cpu")
    nodes = per_node(reply)
    machine = psutil.cpu_times()
    return Cpu(
        workers=sum(_cpu_seconds(processes)),
        publisher=time.process_time(),
        redis=sum(float(n["used_cpu_user"]) + float(n["used_cpu_sys"]) for n in nodes),
        postgres=_postgres_seconds(postgres),
        machine=sum(getattr(machine, part, 0.0) for part in BUSY),
    )


@asynccontextmanager
async def _client(redis_url: str, cluster: bool) -> AsyncIterator[RedisClient]:
    redis = create_redis(RedisConfig(url=redis_url, cluster=cluster))
    try:
        yield redis
    finally:
        await redis.aclose()


async def measure(
    servers: Servers, redis_url: str, variant: Variant, files: int, cameras: Sequence[str]
) -> Measured:
    """One variant's run of B1's work."""
    prefix = new_prefix()
    async with _client(redis_url, variant.cluster) as redis:
        try:
            async with fresh_schema(servers) as schema:
                with tempfile.TemporaryDirectory(prefix="hsi-bench-scaleout-") as name:
                    folder = Path(name)
                    settings = settings_for(prefix, folder / "cameras")
                    names = StreamNames(prefix)
                    env = hsi_env(
                        REDIS_URL=redis_url,
                        REDIS_CLUSTER="true" if variant.cluster else "false",
                        DATABASE_URL=servers.database_url_for(schema),
                        STREAM_PREFIX=prefix,
                        FOSCAM_BASE_PATH=str(folder / "cameras"),
                        DATA_DIR=str(folder / "data"),
                        TIMEZONE="UTC",
                        # as B1's benchmark process logs: warnings and errors only
                        LOG_LEVEL="WARNING",
                    )
                    setup_telemetry(TelemetryConfig())
                    try:
                        ledger = Ledger(redis, names, settings.dedupe_ttl)
                        await register_cameras(ledger, cameras)
                        with workers(env, variant.processes, folder) as processes:
                            await wait_reading(redis, names, cameras, processes, folder)
                            postgres = await postmaster(servers)
                            before = await cpu_now(redis, processes, postgres)
                            each_before = _cpu_seconds(processes)
                            speed = await files_per_second(
                                servers,
                                schema,
                                files,
                                len(cameras),
                                lambda: ingest(ledger, cameras, files),
                                variant.label,
                            )
                            after = await cpu_now(redis, processes, postgres)
                            cpu = after.per_file(before, files)
                            each = zip(_cpu_seconds(processes), each_before, strict=True)
                            busiest = max(now - then for now, then in each) * speed / files
                    finally:
                        reset_telemetry()
        finally:
            await drop_keys(redis, prefix)
    return Measured(speed, cpu, busiest)


@contextlib.contextmanager
def _cluster(url: str | None) -> Iterator[str]:
    """The given cluster, or a three-node one on loopback for the duration."""
    if url is not None:
        yield url
        return
    from tests.fakes.cluster import local_cluster  # a source checkout's, as the tests start it

    with local_cluster() as cluster:
        yield cluster.url


def _cpu_text(runs: Sequence[Measured]) -> str:
    def ms(part: str) -> str:
        values = [value for m in runs if math.isfinite(value := getattr(m.cpu, part))]
        return f"{median(values):.2f}" if values else "-"

    cores = median([m.cores_busy for m in runs])
    busiest = median([m.busiest_worker for m in runs])
    return (
        f"workers {ms('workers')}, publisher {ms('publisher')}, Redis {ms('redis')}, "
        f"PostgreSQL {ms('postgres')}, machine {ms('machine')} ({cores:.1f} cores busy, the "
        f"busiest worker {100 * busiest:.0f} % of one)"
    )


def run(servers: Servers, options: Options, cluster_url: str | None = None) -> list[Figure]:
    """The figures of B8: each variant against (a) of the same round. `cluster_url` names a
    running cluster; None starts one on loopback for the duration."""
    files, count = sizes(options)
    cameras = balanced_cameras(count)
    results: dict[Variant, list[Measured]] = {variant: [] for variant in VARIANTS}
    with _cluster(cluster_url) as cluster:
        for index in range(options.rounds):
            for variant in order(index):
                url = cluster if variant.cluster else servers.redis_url
                results[variant].append(asyncio.run(measure(servers, url, variant, files, cameras)))
    batches = files // count // FILES_PER_BATCH
    cpu = "; ".join(f"{variant.label}: {_cpu_text(runs)}" for variant, runs in results.items())
    figures = []
    for variant in VARIANTS[1:]:
        note = f"floor: {BASELINE.label}, same round"
        if not figures:
            note = (
                f"B1's work ({batches} batches of 25 files per camera, zero-cost detector, "
                f"rules) with the stages in `hsi worker` processes; {note}. CPU ms per file "
                f"(medians): {cpu}"
            )
        figure = rate(
            "B8",
            f"scale-out, {variant.label}, {files} files over {count} cameras",
            "files/s",
            note=note,
        )
        assert figure.floor is not None
        figure.hsi.extend(m.files_per_second for m in results[variant])
        figure.floor.extend(m.files_per_second for m in results[BASELINE])
        figures.append(figure)
    return figures

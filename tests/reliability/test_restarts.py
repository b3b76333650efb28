"""Restart suite: Redis and PostgreSQL go away and come back while `hsi worker` processes run.

With append-only persistence (what the embedded Valkey runs with) a Redis restart loses
nothing: every process reconnects with backoff and every file goes the whole way exactly once,
as it does across a PostgreSQL restart. Without persistence a Redis restart loses the unprojected
entries: every process reports it (`redis.data_lost`, ERROR), recreates its groups and goes on
with new files; the dedupe markers come back from PostgreSQL, so a rescan of the files still on
disk publishes none of them again and no alert is sent twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.runner import ingest_paths
from hsi.app.services import ServiceURLs
from hsi.infra.db import create_engine
from hsi.infra.embedded import EmbeddedPostgres, EmbeddedRedis
from hsi.infra.embedded.valkey import valkey_binary as _valkey_binary
from hsi.infra.redis import RedisConfig, create_redis
from projections.replay import verify
from streams.names import StreamNames
from streams.watch.outcomes import OutcomeKind
from tests.alerts.support import Receiver, webhook_receiver
from tests.fakes.rtdetr import FakeRtDetr
from tests.reliability.fleet import (
    Fleet,
    Progress,
    ingest_settings,
    make_files,
    pipeline_env,
    progress,
    publish,
    settled,
    tally,
)

log = logging.getLogger(__name__)

CAMERAS = ["front", "back", "garage"]
WORKERS = {"detect": "detect", "batch": "batch", "analyze": "analyze", "project": "project"}


def _fleet(env: dict[str, str], folder: Path) -> Fleet:
    folder.mkdir()
    fleet = Fleet(env, folder)
    for name, stage in WORKERS.items():
        fleet.worker(name, stage)
    return fleet


async def _at_least(engine: AsyncEngine, files: int, fleet: Fleet, within: float = 60) -> None:
    """Wait until `files` files are projected with their detections."""
    deadline = time.monotonic() + within
    while (await progress(engine)).detections < files:
        if time.monotonic() > deadline:
            raise AssertionError(f"{await progress(engine)} after {within} s\n{fleet.logs()}")
        await asyncio.sleep(0.3)


@pytest.mark.timeout(300)
async def test_redis_and_postgres_restarts_lose_nothing(
    server_dir: Path, key_prefix: str, tmp_path: Path, rtdetr: tuple[FakeRtDetr, str]
) -> None:
    redis_server, postgres_server = EmbeddedRedis(server_dir), EmbeddedPostgres(server_dir)
    redis_url, database_url = redis_server.start(), postgres_server.start()
    engine = create_engine(database_url)
    redis = create_redis(RedisConfig(url=redis_url))
    camera_root = tmp_path / "cameras"
    files = make_files(camera_root, CAMERAS, 150, 3)
    settings = ingest_settings(camera_root, key_prefix)
    env = pipeline_env(redis_url, database_url, key_prefix, tmp_path, rtdetr[1])
    fleet = _fleet(env, tmp_path / "logs")
    parts = [[camera_root / camera / f"part{part}" for camera in CAMERAS] for part in range(3)]
    try:
        await publish(settings, redis_url, parts[0])
        await _at_least(engine, 100, fleet)

        redis_down = time.monotonic()
        redis_server.stop()
        await asyncio.sleep(2)
        assert redis_server.start() == redis_url  # same port, same append-only file
        redis_down = time.monotonic() - redis_down
        await publish(settings, redis_url, parts[1])

        postgres_down = time.monotonic()
        postgres_server.stop()
        await asyncio.sleep(2)
        assert postgres_server.start() == database_url
        postgres_down = time.monotonic() - postgres_down
        await publish(settings, redis_url, parts[2])

        await settled(engine, len(files), fleet, within=150)
        assert fleet.exited() == {}, fleet.logs()  # every process rode out both restarts
        names = StreamNames(key_prefix)
        end = await tally(redis, engine, names, CAMERAS)
        lost, duplicated = end.lost_and_duplicated(len(files))
        log.warning(
            "restart suite: files=%d redis_down=%.1fs postgres_down=%.1fs lost=%d duplicated=%d",
            len(files),
            redis_down,
            postgres_down,
            lost,
            duplicated,
        )
        assert (lost, duplicated) == (0, 0), end
        assert (end.dead_entries, end.pending) == (0, 0), end
        report = await verify(engine, redis, names)
        assert report.equal, report.differences
    finally:
        fleet.stop()
        await redis.aclose()
        await engine.dispose()
        redis_server.stop()
        postgres_server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _VolatileRedis:
    """A Valkey that keeps nothing on disk: a restart starts it empty."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(_valkey_binary()),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "no",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("Valkey did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[_VolatileRedis]:
    folder = tmp_path / "volatile"
    folder.mkdir()
    server = _VolatileRedis(folder)
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(240)
async def test_redis_without_persistence_reports_the_loss_and_recovers(
    volatile_redis: _VolatileRedis,
    own_database: str,
    own_engine: AsyncEngine,
    key_prefix: str,
    tmp_path: Path,
    rtdetr: tuple[FakeRtDetr, str],
) -> None:
    camera_root = tmp_path / "cameras"
    files = make_files(camera_root, CAMERAS, 50, 2)
    settings = ingest_settings(camera_root, key_prefix)
    env = pipeline_env(volatile_redis.url, own_database, key_prefix, tmp_path, rtdetr[1])
    fleet = _fleet(env, tmp_path / "logs")
    try:
        await publish(settings, volatile_redis.url, [camera_root / c / "part0" for c in CAMERAS])
        await settled(own_engine, len(files) // 2, fleet, within=90)

        volatile_redis.stop()
        volatile_redis.start()  # empty: streams, groups and the epoch token are gone
        deadline = time.monotonic() + 30
        while not all(
            any("redis.data_lost" in line for line in fleet.log_lines(name)) for name in WORKERS
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"the loss was not reported by every worker\n{fleet.logs()}")
            await asyncio.sleep(0.3)
        for name in WORKERS:
            records = [json.loads(line) for line in fleet.log_lines(name) if line.startswith("{")]
            lost = [r for r in records if r.get("event") == "redis.data_lost"]
            assert [r["level"] for r in lost] == ["ERROR"], lost  # once per loss, loudly

        # The same processes recreate their groups and take the files that come next.
        await publish(settings, volatile_redis.url, [camera_root / c / "part1" for c in CAMERAS])
        await settled(own_engine, len(files), fleet, within=90)
        assert fleet.exited() == {}, fleet.logs()
    finally:
        fleet.stop()


EVERY_EVENT = """
[[rules]]
name = "everything"
min_level = "low"
channels = ["webhook"]
"""


async def _sha_duplicates(engine: AsyncEngine) -> int:
    """Files projected more than once: rows of media_files beyond one per (camera, sha256)."""
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) - count(DISTINCT (camera_id, sha256)) FROM media_files")
        )
    return int(found or 0)


async def _events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM events")) or 0)


async def _alerted(engine: AsyncEngine, receiver: Receiver, fleet: Fleet, within: float) -> int:
    """Wait until the webhook got one delivery per projected event; the number of events."""
    deadline = time.monotonic() + within
    while True:
        events = await _events(engine)
        if events and len(receiver.delivered) >= events:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(receiver.delivered)} deliveries for {events} events\n{fleet.logs()}"
            )
        await asyncio.sleep(0.3)


@pytest.mark.timeout(240)
async def test_redis_without_persistence_publishes_and_alerts_nothing_twice(
    volatile_redis: _VolatileRedis,
    own_database: str,
    own_engine: AsyncEngine,
    key_prefix: str,
    tmp_path: Path,
    rtdetr: tuple[FakeRtDetr, str],
) -> None:
    """After Redis restarts empty, a rescan of the files still on disk publishes none of the
    projected ones again (0 duplicate events) and the webhook gets no alert twice."""
    camera_root = tmp_path / "cameras"
    files = make_files(camera_root, CAMERAS, 40, 2)
    settings = ingest_settings(camera_root, key_prefix)
    rules = tmp_path / "rules.toml"
    rules.write_text(EVERY_EVENT, encoding="utf-8")
    workers = {**WORKERS, "notify": "notify"}
    with webhook_receiver(Receiver()) as receiver:
        env = pipeline_env(volatile_redis.url, own_database, key_prefix, tmp_path, rtdetr[1])
        env.update(
            NOTIFICATION_ENABLED="true",
            DEFAULT_WEBHOOK_URL=receiver.url,
            ALERT_RULES_PATH=str(rules),
        )
        (tmp_path / "logs").mkdir()
        fleet = Fleet(env, tmp_path / "logs")
        for name, stage in workers.items():
            fleet.worker(name, stage)
        try:
            await publish(
                settings, volatile_redis.url, [camera_root / c / "part0" for c in CAMERAS]
            )
            await settled(own_engine, len(files) // 2, fleet, within=90)
            before = await _alerted(own_engine, receiver, fleet, within=60)

            volatile_redis.stop()
            volatile_redis.start()  # empty: markers, alert states and the epoch token are gone
            deadline = time.monotonic() + 30
            while not any("redis.markers_restored" in line for line in fleet.log_lines("project")):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no markers restored\n{fleet.logs()}")
                await asyncio.sleep(0.3)

            # The same camera folders scanned again, as `hsi ingest` (or a restarted watcher) does.
            urls = ServiceURLs(own_database, volatile_redis.url, ())
            outcomes = await ingest_paths(settings, urls, [camera_root / c for c in CAMERAS])
            kinds = {o.path: o.kind for o in outcomes}
            again = [
                p
                for p in files
                if p.parent.name == "part0" and kinds[p] is not OutcomeKind.DUPLICATE
            ]
            assert again == [], f"{len(again)} projected files published again"
            assert all(kinds[p] is OutcomeKind.OBSERVED for p in files if p.parent.name == "part1")

            last: Progress = await settled(own_engine, len(files), fleet, within=90)
            events = await _alerted(own_engine, receiver, fleet, within=60)
            keys = [r.headers.get("idempotency-key") for r in receiver.delivered]
            log.warning(
                "no-persistence suite: files=%d events=%d/%d deliveries=%d",
                len(files),
                before,
                events,
                len(keys),
            )
            assert await _sha_duplicates(own_engine) == 0, last
            assert len(keys) == len(set(keys)) == events, keys
            assert fleet.exited() == {}, fleet.logs()
        finally:
            fleet.stop()

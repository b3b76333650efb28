"""HSI on a three-node Redis Cluster: the watcher and the write-side pipeline, end to end."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hsi.app.pipeline import Pipeline, PipelineOptions
from hsi.app.runner import build_watcher
from hsi.infra.redis import RedisClient, RedisConfig, check_server, create_redis, parse_version
from hsi.settings.model import Settings
from streams.envelope import read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import AnalysisCompleted, DetectionCompleted, Entry, EntryDead
from tests.conftest import PHOTOS
from tests.fakes.cluster import RedisClusterServer

pytestmark = pytest.mark.slow

# Camera folder → camera id. Their hash tags land on the three different nodes (checked below).
FOLDERS = {"Front Door": "front_door", "Back Yard": "back_yard", "Patio": "patio"}
TIMEOUT = 30.0


def _settings(root: Path, prefix: str, url: str) -> Settings:
    values: dict[str, Any] = {
        "redis_url": url,
        "redis_cluster": True,
        "foscam_base_path": root,
        "stream_prefix": prefix,
        "watch_stable_seconds": 0.2,
        "batch_window_seconds": 4,
        "batch_idle_timeout_seconds": 1,
        "stream_reclaim_idle_ms": 300,
        "stream_reclaim_interval_seconds": 0.2,
        "stream_max_deliveries": 2,
        "stream_block_ms": 100,
        "detection_confidence_threshold": 0.35,
        "timezone": "UTC",
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def cluster_client(cluster_url: str) -> AsyncIterator[RedisClient]:
    client = create_redis(RedisConfig(url=cluster_url, cluster=True))
    yield client
    await client.aclose()


async def _entries(client: RedisClient, stream: str) -> list[tuple[str, Entry]]:
    rows: Any = await client.xrange(stream)
    return [(entry_id.decode(), read_fields(fields)[0]) for entry_id, fields in rows]


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records at ERROR or above, and any record (fields and traceback included) that mentions
    a cross-slot command: the server's CROSSSLOT or redis-py's CrossSlotTransactionError."""
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or "crossslot" in str(vars(r)).lower()
    ]


async def _until(
    condition: Callable[[], Awaitable[bool]], what: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Wait for `condition`; fail at once when an error is logged meanwhile."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                if problems := _problems(caplog):
                    pytest.fail(f"errors logged while waiting for {what}: {problems}")
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def _copy(root: Path, folder: str, photo: str, name: str) -> None:
    target = root / folder
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PHOTOS / photo, target / name)


async def test_health_reports_every_node(cluster_client: RedisClient) -> None:
    """`check_server` asks every node and reports a cluster of a version HSI supports."""
    health = await check_server(cluster_client)
    assert health.mode == "cluster"
    assert health.server in {"redis", "valkey"}
    assert parse_version(health.version) >= (6, 2, 0)
    assert health.append_only is False  # the test nodes run without persistence


async def test_uploads_become_analyses_on_three_nodes(
    redis_cluster: RedisClusterServer,
    cluster_client: RedisClient,
    key_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Uploads to cameras on three nodes become analyses; duplicates, a dead consumer's entry
    and an unreadable entry are handled as on one server, with no error logged."""
    caplog.set_level(logging.WARNING)
    root = tmp_path / "cameras"
    root.mkdir()
    settings = _settings(root, key_prefix, redis_cluster.url)
    names = StreamNames(key_prefix)
    nodes = set()
    for camera in FOLDERS.values():
        slot = int(await cluster_client.cluster_keyslot(names.files(camera)))
        assert slot == int(await cluster_client.cluster_keyslot(names.open_batch(camera)))
        nodes.add(redis_cluster.node_of(slot).port)
    assert len(nodes) == 3, "the cameras must spread over the three nodes"

    watcher = build_watcher(settings, cluster_client)
    pipeline = Pipeline(
        settings, redis_cluster.url, PipelineOptions(discovery_interval_seconds=0.2)
    )
    await watcher.start()
    try:
        # Patio: a worker reads its upload and dies before XACK; an unreadable entry follows.
        _copy(root, "Patio", "person-cameraman.jpg", "MDAlarm_20261128-120000.jpg")
        patio_files = names.files("patio")

        async def patio_observed() -> bool:
            return int(await cluster_client.xlen(patio_files)) == 1

        await _until(patio_observed, "the patio upload", caplog)
        await ensure_group(cluster_client, patio_files, Group.DETECT.value)
        taken: Any = await cluster_client.xreadgroup(
            Group.DETECT.value, "crashed-worker", {patio_files: ">"}, count=10
        )
        crashed_id = taken[0][1][0][0].decode()
        unreadable_id = (await cluster_client.xadd(patio_files, {b"junk": b"1"})).decode()

        await pipeline.start()
        _copy(root, "Front Door", "person-astronaut.jpg", "MDAlarm_20261128-120100.jpg")
        _copy(root, "Back Yard", "person-cameraman.jpg", "MDAlarm_20261128-120200.jpg")

        async def front_observed() -> bool:
            return int(await cluster_client.xlen(names.files("front_door"))) == 1

        await _until(front_observed, "the front door upload", caplog)
        _copy(root, "Front Door", "person-astronaut.jpg", "MDAlarm_20261128-120300.jpg")

        async def all_done() -> bool:
            lengths = [await cluster_client.xlen(names.analyses(c)) for c in FOLDERS.values()]
            dead = await cluster_client.xlen(names.dead("patio"))
            return all(n >= 1 for n in lengths) and dead >= 1 and watcher.counts.duplicates >= 1

        await _until(
            all_done, "analyses on every camera, the dead letter and the duplicate", caplog
        )
        await pipeline.drain(TIMEOUT)
    finally:
        await watcher.stop()
        await pipeline.stop()

    for camera in FOLDERS.values():
        analyses = await _entries(cluster_client, names.analyses(camera))
        assert len(analyses) == 1, camera
        assert isinstance(analyses[0][1], AnalysisCompleted), analyses
        assert "person" in analyses[0][1].summary.lower(), analyses[0][1].summary
    assert await cluster_client.xlen(names.files("front_door")) == 1  # the duplicate added none
    assert await cluster_client.xlen(names.files("back_yard")) == 1
    patio_detections = await _entries(cluster_client, names.detections("patio"))
    assert [d.file_entry_id for _, d in patio_detections if isinstance(d, DetectionCompleted)] == [
        crashed_id
    ]
    [(_, dead)] = await _entries(cluster_client, names.dead("patio"))
    assert isinstance(dead, EntryDead)
    assert dead.entry_id == unreadable_id
    assert "unreadable" in dead.last_error
    for camera in FOLDERS.values():
        for group, stream in [
            (Group.DETECT, names.files(camera)),
            (Group.BATCH, names.detections(camera)),
            (Group.ANALYZE, names.batches(camera)),
        ]:
            pending: Any = await cluster_client.xpending(stream, group.value)
            assert pending["pending"] == 0, (camera, group)
    assert not _problems(caplog)

"""The Redis-facing routes on a three-node Redis Cluster: stream health, readiness, live feed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.redis import RedisClient, RedisConfig, create_redis
from streams.names import StreamNames
from tests.api.conftest import MakeConfig, serve
from tests.api.server import is_event, next_where, running, sse
from tests.api.test_live import FAST, add, analysis, batch
from tests.fakes.cluster import SLOT_RANGES, RedisClusterServer

CAMERAS = ("front_door", "back_yard")


@pytest.fixture
async def cluster(
    redis_cluster: RedisClusterServer, cluster_url: str
) -> AsyncIterator[RedisClient]:
    client = create_redis(RedisConfig(url=cluster_url, cluster=True))
    yield client
    await client.aclose()


def _node(key: str) -> int:
    slot = key_slot(key.encode())
    return next(i for i, (first, last) in enumerate(SLOT_RANGES) if first <= slot <= last)


def test_the_cameras_live_on_different_nodes(names: StreamNames) -> None:
    """The test cameras' keys are in slots of different nodes (so cross-slot reads would fail)."""
    assert _node(names.files(CAMERAS[0])) != _node(names.files(CAMERAS[1]))


async def test_streams_and_ready_on_a_cluster(
    engine: AsyncEngine,
    make_config: MakeConfig,
    cluster: RedisClient,
    cluster_url: str,
    names: StreamNames,
) -> None:
    """/api/streams and /ready read every camera's streams across the cluster's nodes."""
    await cluster.sadd(names.camera_set, *CAMERAS)  # type: ignore[misc]
    for camera, count in zip(CAMERAS, (3, 2), strict=True):
        for i in range(count):
            await cluster.xadd(names.files(camera), {b"n": str(i).encode()})
        await cluster.xgroup_create(names.files(camera), "project", id="0")
    await cluster.xreadgroup("project", "p", {names.files("back_yard"): ">"}, count=1)
    config = make_config(redis=RedisConfig(url=cluster_url, cluster=True))
    async with serve(config) as client:
        body = (await client.get("/api/streams")).json()
        lengths = {
            c["camera_id"]: {s["kind"]: s["length"] for s in c["streams"]} for c in body["cameras"]
        }
        assert lengths["front_door"]["files"] == 3
        assert lengths["back_yard"]["files"] == 2
        assert body["totals"]["pending"] == 1
        assert body["totals"]["lag"] == 3 + 1
        ready = (await client.get("/ready")).json()
        assert ready["checks"]["redis"]["ok"] is True
        projector = ready["checks"]["projector"]
        assert (projector["lag"], projector["pending"]) == (4, 1)


async def test_live_feed_on_a_cluster(
    engine: AsyncEngine,
    make_config: MakeConfig,
    cluster: RedisClient,
    cluster_url: str,
    names: StreamNames,
) -> None:
    """The live feed follows cameras on different nodes of a cluster."""
    await cluster.sadd(names.camera_set, *CAMERAS)  # type: ignore[misc]
    config = make_config(redis=RedisConfig(url=cluster_url, cluster=True), live=FAST)
    async with running(config) as client, client.stream("GET", "/api/live") as response:
        events = sse(response)
        await next_where(events, lambda e: e.get("comment") == "connected")
        first = await add(cluster, names.batches("front_door"), batch("front_door"))
        second = await add(cluster, names.analyses("back_yard"), analysis("back_yard", "b", 40))
        received = [await next_where(events, is_event) for _ in range(2)]
        assert sorted(e["id"] for e in received) == sorted(
            [f"front_door|batches|{first}", f"back_yard|analyses|{second}"]
        )

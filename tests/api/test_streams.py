"""GET /api/streams and /ready on real Redis streams with consumer groups and pending entries."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.names import StreamNames
from tests.api.conftest import MakeConfig, serve
from tests.waiting import wait_until


async def _fill(redis: Redis, names: StreamNames) -> None:
    """front_door: 5 files, group detect read 2 (pending), group project read all and acked 4;
    2 dead letters. garage: registered, no streams yet."""
    await redis.sadd(names.camera_set, "front_door", "garage")  # type: ignore[misc]
    files = names.files("front_door")
    ids = [await redis.xadd(files, {b"n": str(i).encode()}) for i in range(5)]
    await redis.xgroup_create(files, "detect", id="0")
    await redis.xgroup_create(files, "project", id="0")
    await redis.xreadgroup("detect", "c1", {files: ">"}, count=2)
    await redis.xreadgroup("project", "p1", {files: ">"})
    await redis.xack(files, "project", *ids[:4])
    for i in range(2):
        await redis.xadd(names.dead("front_door"), {b"n": str(i).encode()})


STUCK_MS = 250


async def _oldest_idle_ms(redis: Redis, stream: str) -> int:
    """How long group detect's oldest pending entry has been waiting, as Redis says."""
    (oldest,) = await redis.xpending_range(stream, "detect", "-", "+", 1)
    return int(oldest["time_since_delivered"])


async def test_streams_report_lengths_lag_pending_and_dead_letters(
    client: httpx.AsyncClient, redis_client: Redis, names: StreamNames
) -> None:
    """Length, last id, per-group lag/pending/oldest pending (with how long it has waited) and
    dead letters per camera."""
    await _fill(redis_client, names)
    files_key = names.files("front_door")

    async def stuck() -> bool:
        return await _oldest_idle_ms(redis_client, files_key) >= STUCK_MS

    await wait_until(stuck, f"detect's pending entries to be idle {STUCK_MS} ms")
    idle_before = await _oldest_idle_ms(redis_client, files_key)
    response = await client.get("/api/streams")
    idle_after = await _oldest_idle_ms(redis_client, files_key)
    assert response.status_code == 200, response.text
    body = response.json()
    cameras = {c["camera_id"]: c for c in body["cameras"]}
    assert list(cameras) == ["front_door", "garage"]
    front = cameras["front_door"]
    assert front["dead_letters"] == 2
    streams = {s["kind"]: s for s in front["streams"]}
    files = streams["files"]
    assert files["exists"]
    assert files["length"] == 5
    assert files["last_id"] is not None
    assert files["key"] == names.files("front_door")
    groups = {g["name"]: g for g in files["groups"]}
    assert groups["detect"]["pending"] == 2
    assert groups["detect"]["lag"] == 3
    assert groups["detect"]["oldest_pending_id"] == files["first_id"]
    assert idle_before <= groups["detect"]["oldest_pending_idle_ms"] <= idle_after
    assert groups["project"]["pending"] == 1
    assert groups["project"]["lag"] == 0
    assert streams["batches"] == {
        "kind": "batches",
        "key": names.batches("front_door"),
        "exists": False,
        "length": 0,
        "first_id": None,
        "last_id": None,
        "groups": [],
    }
    assert all(not s["exists"] for s in cameras["garage"]["streams"])
    assert body["totals"] == {"length": 7, "pending": 3, "lag": 3, "dead_letters": 2}

    only = (await client.get("/api/streams", params={"camera_id": "garage"})).json()
    assert [c["camera_id"] for c in only["cameras"]] == ["garage"]


async def test_ready_reports_projector_lag_against_its_limit(
    engine: AsyncEngine, make_config: MakeConfig, redis_client: Redis, names: StreamNames
) -> None:
    """/ready is 200 while the projector is within the limit and 503 past it, with numbers."""
    await _fill(redis_client, names)
    # project: files 0 lag + 1 pending; dead stream has no `project` group: its 2 entries count
    async with serve(make_config(ready_max_projector_lag=3)) as client:
        body = (await client.get("/ready")).json()
        assert body["status"] == "ready", body
        projector = body["checks"]["projector"]
        assert (projector["lag"], projector["pending"], projector["behind"]) == (2, 1, 3)
        assert body["checks"]["migrations"] == {"ok": True, "pending": []}
    async with serve(make_config(ready_max_projector_lag=2)) as client:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["projector"]["ok"] is False


async def test_ready_is_503_without_migrations(
    db_engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """An empty schema is not ready: the migrations are listed as pending."""
    async with serve(make_config()) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    migrations = response.json()["checks"]["migrations"]
    assert migrations["ok"] is False
    assert migrations["pending"]

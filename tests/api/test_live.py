"""GET /api/live under a real uvicorn: new entries arrive, Last-Event-ID resumes, caps hold."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.asgi import LiveConfig, RateLimits
from hsi.infra.redis import RedisClient
from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.schemas import AnalysisCompleted, BatchClosed
from tests.api.conftest import MakeConfig
from tests.api.server import is_event, next_where, running, sse

KEY = "live-key"
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
FAST = LiveConfig(heartbeat_seconds=0.3, block_seconds=0.2, idle_timeout_seconds=30)


def batch(camera: str) -> BatchClosed:
    return BatchClosed(
        camera_id=camera,
        batch_id=str(uuid.uuid4()),
        detections=(),
        window_start=NOW,
        window_end=NOW,
        close_reason="idle",
        detection_count=1,
        object_types=("person",),
        max_confidence=0.9,
        fast_path=False,
        closed_at=NOW,
    )


def analysis(camera: str, batch_id: str, score: int) -> AnalysisCompleted:
    return AnalysisCompleted(
        camera_id=camera,
        batch_id=batch_id,
        batch_entry_id="1-0",
        risk_score=score,
        risk_level="high",
        summary="someone at the door",
        reasoning="a person at night",
        analyzer="rules",
        latency_ms=1.0,
        analyzed_at=NOW,
    )


async def add(redis: RedisClient, key: str, entry: Any) -> str:
    entry_id = await redis.xadd(key, entry_fields(entry))  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def test_live_feed_sends_new_entries_and_resumes_after_last_event_id(
    engine: AsyncEngine, make_config: MakeConfig, redis_client: Redis, names: StreamNames
) -> None:
    """New batches and analyses arrive as SSE events with resumable ids; a reconnect with
    Last-Event-ID gets exactly the later entries, and cameras registered later are followed."""
    await redis_client.sadd(names.camera_set, "front_door")  # type: ignore[misc]
    await add(redis_client, names.batches("front_door"), batch("front_door"))  # before: not sent
    config = make_config(live=FAST, api_key_enabled=True, api_keys=(SecretStr(KEY),))
    async with running(config) as client:
        async with client.stream("GET", "/api/live", params={"api_key": KEY}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse(response)
            await next_where(events, lambda e: e.get("comment") == "connected")
            closed = batch("front_door")
            batch_id = await add(redis_client, names.batches("front_door"), closed)
            first = await next_where(events, is_event)
            assert first["event"] == "batch"
            assert first["id"] == f"front_door|batches|{batch_id}"
            data = orjson.loads(first["data"])
            assert data["batch_id"] == closed.batch_id
            assert data["event_url"] == f"/api/events/{closed.batch_id}"
            assert data["camera_id"] == "front_door"
            assert data["files"] == 0

            analysed = analysis("front_door", closed.batch_id, 70)
            analysis_id = await add(redis_client, names.analyses("front_door"), analysed)
            second = await next_where(events, is_event)
            assert (second["event"], second["id"]) == (
                "analysis",
                f"front_door|analyses|{analysis_id}",
            )
            assert orjson.loads(second["data"])["risk_score"] == 70

            await redis_client.sadd(names.camera_set, "garage")  # type: ignore[misc]
            garage_id = await add(redis_client, names.batches("garage"), batch("garage"))
            third = await next_where(events, is_event)
            assert third["id"] == f"garage|batches|{garage_id}"
            await next_where(events, lambda e: e.get("comment") == "heartbeat")

        later = await add(
            redis_client, names.analyses("front_door"), analysis("front_door", "x", 90)
        )
        async with client.stream(
            "GET", "/api/live", headers={"X-API-Key": KEY, "Last-Event-ID": first["id"]}
        ) as response:
            events = sse(response)
            resumed = [await next_where(events, is_event) for _ in range(3)]
            assert [e["id"] for e in resumed] == [
                second["id"],
                third["id"],
                f"front_door|analyses|{later}",
            ]
            # nothing else follows: the next thing is a heartbeat
            following = await next_where(events, lambda e: True, within=2)
            assert following == {"comment": "heartbeat"}

        bad = await client.get("/api/live", params={"api_key": KEY, "last_event_id": "nope"})
        assert bad.status_code == 400
        assert bad.json()["parameter"] == "last_event_id"


async def test_live_connections_are_capped_per_client(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """A client past its live-connection cap gets 429; the slot is freed on disconnect."""
    limits = RateLimits(live_connections_per_client=1, live_max_connections=5)
    async with running(make_config(live=FAST, rate_limits=limits)) as client:
        async with client.stream("GET", "/api/live") as first:
            await next_where(sse(first), lambda e: e.get("comment") == "connected")
            second = await client.get("/api/live")
            assert second.status_code == 429
            assert second.headers["retry-after"]
        async with asyncio.timeout(5):  # the server notices the disconnect and frees the slot
            while True:
                async with client.stream("GET", "/api/live") as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.05)


async def test_live_feed_is_503_when_full(engine: AsyncEngine, make_config: MakeConfig) -> None:
    """Past live_max_connections the feed answers 503."""
    limits = RateLimits(live_connections_per_client=5, live_max_connections=1)
    async with (
        running(make_config(live=FAST, rate_limits=limits)) as client,
        client.stream("GET", "/api/live") as first,
    ):
        await next_where(sse(first), lambda e: e.get("comment") == "connected")
        full = await client.get("/api/live")
        assert full.status_code == 503
        assert "full" in full.json()["error"]

"""The live feed when its Redis connection is killed, and when Redis itself goes away.

A killed connection is not an outage: redis-py opens a new one, either when the blocking XREAD
fails (the client's retry policy) or, when the kill lands between two commands, when the pool
hands the dead connection out again (`ConnectionPool.ensure_connection` reconnects without asking
the retry policy). The feed keeps its stream positions itself, so the reconnect loses and repeats
nothing, and the feed goes on. A server that is gone ends the feed with a comment saying so.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.config import LiveConfig
from hsi.api.live import id_order
from hsi.infra.db import migrate
from hsi.infra.embedded import EmbeddedRedis
from hsi.infra.redis import RedisConfig, create_redis
from streams.names import StreamNames
from tests.api.server import Event, is_event, next_where, running, sse
from tests.api.test_live import add, analysis, batch
from tests.conftest import MakeConfig

CAMERA = "front_door"
LIVE = LiveConfig(heartbeat_seconds=0.05, block_seconds=1, idle_timeout_seconds=60)
GONE = "redis unavailable; reconnect with Last-Event-ID"


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate(db_engine)
    return db_engine


async def _until(found: Callable[[], Awaitable[Any]], what: str, within: float = 10) -> Any:
    """The first truthy answer of `found`, asked again until it comes."""
    try:
        async with asyncio.timeout(within):
            while True:
                if answer := await found():
                    return answer
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def _connections(redis: Redis, name: str) -> list[dict[str, Any]]:
    clients: Any = await redis.client_list()
    return [c for c in clients if c.get("name") == name]


def _is_event_or_loss(event: Event) -> bool:
    return is_event(event) or event.get("comment") == GONE


@pytest.mark.parametrize("blocked", [True, False], ids=["blocked-in-xread", "idle-in-pool"])
async def test_a_killed_connection_is_replaced_and_the_feed_loses_and_repeats_nothing(
    engine: AsyncEngine,
    make_config: MakeConfig,
    redis_url: str,
    redis_client: Redis,
    key_prefix: str,
    blocked: bool,
) -> None:
    """Killing the feed's Redis connection is ridden out wherever the kill lands (in a blocking
    XREAD, or between commands: with no camera yet the feed only polls the camera set): the feed
    goes on over a new connection, and every entry written before, during and after the kill
    arrives exactly once, in id order."""
    names = StreamNames(key_prefix)
    if blocked:
        await redis_client.sadd(names.camera_set, CAMERA)  # type: ignore[misc]
    name = f"hsi-live-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in redis_url else "?"
    config = make_config(
        redis=RedisConfig(url=f"{redis_url}{separator}client_name={name}"), live=LIVE
    )

    async def write_pair() -> list[str]:
        closed = batch(CAMERA)
        batch_id = await add(redis_client, names.batches(CAMERA), closed)
        scored = analysis(CAMERA, closed.batch_id, 50)
        analysis_id = await add(redis_client, names.analyses(CAMERA), scored)
        return [f"{CAMERA}|batches|{batch_id}", f"{CAMERA}|analyses|{analysis_id}"]

    async def feed_connection() -> dict[str, Any] | None:
        found = await _connections(redis_client, name)
        assert len(found) <= 1  # the feed has a connection of its own
        if found and (not blocked or "b" in found[0]["flags"]):
            return found[0]
        return None

    async with running(config) as client, client.stream("GET", "/api/live") as response:
        events = sse(response)
        await next_where(events, lambda e: e.get("comment") == "connected")
        written = await write_pair()
        killed = await _until(feed_connection, "the feed's connection, blocked or idle")
        await redis_client.client_kill_filter(_id=killed["id"])
        written += await write_pair()  # while the feed finds out and reconnects
        await redis_client.sadd(names.camera_set, CAMERA)  # type: ignore[misc]

        async def replaced() -> bool:
            found = await feed_connection()
            return found is not None and found["id"] != killed["id"]

        await _until(replaced, "a new connection of the feed")
        written += await write_pair()

        received = [(await next_where(events, _is_event_or_loss)).get("id") for _ in written]
        assert sorted(map(str, received)) == sorted(written)  # each entry, once, no loss comment
        order = [id_order(str(live_id).rpartition("|")[2]) for live_id in received]
        assert order == sorted(order)  # in id order (entries of one millisecond in any order)
        # Nothing is sent twice: what follows the last entry is a heartbeat.
        assert await next_where(events, lambda e: True) == {"comment": "heartbeat"}


@pytest.mark.timeout(60)
async def test_the_live_feed_ends_cleanly_when_redis_goes_away(
    engine: AsyncEngine, make_config: MakeConfig, server_dir: Path, key_prefix: str
) -> None:
    """Losing Redis under an open live feed used to escape as an exception from a response that
    had already started (a broken connection, a traceback); now, once the client's retries are
    spent, the feed says why and ends, and the browser reconnects with its last id."""
    server = EmbeddedRedis(server_dir)
    url = server.start()
    redis = create_redis(RedisConfig(url=url))
    # Two retries, so the feed gives up within about a second (the default five take ~8 s).
    config = make_config(redis=RedisConfig(url=url, retry_attempts=2), live=LIVE)
    names = StreamNames(key_prefix)
    try:
        await redis.sadd(names.camera_set, CAMERA)  # type: ignore[misc]
        async with (
            running(config) as client,
            client.stream("GET", "/api/live") as response,
        ):
            events = sse(response)
            await next_where(events, lambda e: e.get("comment") == "connected")
            entry = await add(redis, names.batches(CAMERA), batch(CAMERA))
            first = await next_where(events, _is_event_or_loss)
            assert first["id"] == f"{CAMERA}|batches|{entry}"
            await asyncio.to_thread(server.stop)
            rest = await _rest(events, within=40)
        assert rest[-1] == {"comment": GONE}
        assert not any(is_event(e) for e in rest)
    finally:
        await redis.aclose()
        server.stop()


async def _rest(events: AsyncIterator[Event], within: float) -> list[Event]:
    """Everything until the stream ends."""
    async with asyncio.timeout(within):
        return [event async for event in events]

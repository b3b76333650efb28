"""Done when: with a rule for front_door and a webhook configured, a high-risk analysis reaches
the webhook once, shows in GET /api/alerts, and a restart does not resend it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.asgi import APIConfig, RateLimits
from hsi.app.pipeline import ALL_STAGES, Pipeline, PipelineOptions
from hsi.infra.db import migrate
from hsi.infra.redis import RedisConfig
from hsi.settings.model import Settings
from streams.envelope import entry_fields
from streams.names import Group, StreamKind, StreamNames
from tests.alerts.support import CAMERA, Receiver, analysis, batch, entries, wait_until
from tests.api.conftest import serve
from tests.waiting import WITHIN

RULES = """
[[rules]]
name = "front-door"
min_level = "high"
cameras = ["front_door"]
channels = ["webhook"]
"""


def _settings(tmp_path: Path, prefix: str, receiver: Receiver, **overrides: Any) -> Settings:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    values: dict[str, Any] = {
        "foscam_base_path": tmp_path / "cameras",
        "stream_prefix": prefix,
        "stream_reclaim_idle_ms": 500,
        "stream_reclaim_interval_seconds": 0.2,
        "stream_block_ms": 50,
        "timezone": "UTC",
        "notification_enabled": True,
        "default_webhook_url": receiver.url,
        "webhook_secret": receiver.secret,
        "alert_rules_path": rules,
        "public_base_url": "https://hsi.example",
        "alert_max_age_seconds": 0,  # events of a fixed past time (`T0`): no age bound
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # settings-only kwarg


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate(db_engine)
    return db_engine


@pytest.fixture
async def client(
    engine: AsyncEngine, database_url: str, db_schema: str, redis_url: str, key_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    config = APIConfig(
        database_url=database_url,
        redis=RedisConfig(url=redis_url),
        database_schema=db_schema,
        stream_prefix=key_prefix,
        rate_limits=RateLimits(enabled=False),
    )
    async with serve(config) as http:
        yield http


async def _pipeline(
    settings: Settings, redis_url: str, database_url: str, db_schema: str
) -> Pipeline:
    pipeline = Pipeline(
        settings,
        redis_url,
        PipelineOptions(stages=(Group.NOTIFY, Group.PROJECT), discovery_interval_seconds=0.1),
        database_url=f"{database_url}?options=-csearch_path%3D{db_schema}",
    )
    await pipeline.start()
    return pipeline


async def test_high_risk_event_alerts_once_and_not_again_after_a_restart(
    redis_client: Redis,
    key_prefix: str,
    tmp_path: Path,
    receiver: Receiver,
    client: httpx.AsyncClient,
    redis_url: str,
    database_url: str,
    db_schema: str,
) -> None:
    """analysis.completed → one signed webhook → alert.sent → GET /api/alerts and the event's
    alert state; after a restart (and a re-published analysis) nothing is sent again."""
    names = StreamNames(key_prefix)
    settings = _settings(tmp_path, key_prefix, receiver)
    await redis_client.sadd(names.camera_set, CAMERA)
    pipeline = await _pipeline(settings, redis_url, database_url, db_schema)
    try:
        await wait_until(
            lambda: CAMERA in pipeline.runners[Group.NOTIFY, StreamKind.ANALYSES].cameras
        )
        closed = batch()
        batch_id = (await redis_client.xadd(names.batches(CAMERA), entry_fields(closed))).decode()
        assessed = analysis(closed, batch_id, score=80, level="high")
        await redis_client.xadd(names.analyses(CAMERA), entry_fields(assessed))
        await wait_until(lambda: len(receiver.delivered) >= 1, within=WITHIN)
        (request,) = receiver.delivered
        assert receiver.signed(request)
        body = orjson.loads(request.body)
        assert body["event_id"] == closed.batch_id
        assert body["rule"] == "front-door"
        assert body["links"]["event"] == f"https://hsi.example/api/events/{closed.batch_id}"

        async def listed() -> bool:
            items = (await client.get("/api/alerts")).json()["items"]
            return len(items) == 1

        await wait_until(listed, within=10)
        (item,) = (await client.get("/api/alerts")).json()["items"]
        assert (item["event_id"], item["channel"], item["status"]) == (
            closed.batch_id,
            "webhook",
            "sent",
        )
        event = (await client.get(f"/api/events/{closed.batch_id}")).json()
        assert [(a["channel"], a["status"]) for a in event["alerts"]] == [("webhook", "sent")]
        await pipeline.drain(10)
    finally:
        await pipeline.stop()

    # A restart; then the analysis is published again (as `hsi dlq retry` would).
    pipeline = await _pipeline(settings, redis_url, database_url, db_schema)
    try:
        await wait_until(
            lambda: CAMERA in pipeline.runners[Group.NOTIFY, StreamKind.ANALYSES].cameras
        )
        await redis_client.xadd(names.analyses(CAMERA), entry_fields(assessed))
        await pipeline.drain(10)
    finally:
        await pipeline.stop()
    assert len(receiver.received) == 1
    facts = [e.type for _, e in await entries(redis_client, names.alerts(CAMERA))]
    assert facts == ["alert.sent"]
    assert len((await client.get("/api/alerts")).json()["items"]) == 1


def test_notify_runs_only_when_notifications_are_enabled(
    tmp_path: Path, key_prefix: str, receiver: Receiver, redis_url: str
) -> None:
    """ALL_STAGES names notify; a pipeline runs it only with NOTIFICATION_ENABLED."""
    assert Group.NOTIFY in ALL_STAGES
    enabled = _settings(tmp_path, key_prefix, receiver)
    disabled = _settings(tmp_path, key_prefix, receiver, notification_enabled=False)
    options = PipelineOptions(stages=(*ALL_STAGES[:3], Group.NOTIFY))
    assert Group.NOTIFY in Pipeline(enabled, redis_url, options).options.stages
    assert Group.NOTIFY not in Pipeline(disabled, redis_url, options).options.stages

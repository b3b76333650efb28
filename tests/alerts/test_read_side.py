"""Alerts on the read side: the projection, GET /api/alerts, the event's alert state, replay
and retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.asgi import APIConfig, RateLimits
from hsi.infra.db import migrate
from hsi.infra.redis import RedisConfig
from projections.replay import verify
from projections.retention import run_retention
from projections.rows import rows_for
from streams.alerts import NotifyConfig, WebhookConfig, load_rules
from streams.alerts.channels import build_channels
from streams.envelope import entry_fields
from streams.ids import alert_id, event_id
from streams.names import Group, StreamKind, StreamNames
from streams.reclaim import ReclaimConfig, Reclaimer
from streams.schemas import AlertFailed, AlertSent, AlertSkipped
from streams.stages.notify import NotifyStage
from tests.alerts.support import (
    CAMERA,
    T0,
    Receiver,
    drain,
    pending,
    publish_event,
    wait_until,
)
from tests.api.conftest import serve
from tests.projections.builders import camera_registered
from tests.projections.support import dump, project_all, stage_for

AT = datetime(2026, 1, 16, 8, 0, tzinfo=UTC)


def test_alert_entries_become_alert_rows() -> None:
    """alert.sent, alert.failed and alert.skipped map to one row each, keyed on camera and
    entry id."""
    common = {
        "camera_id": CAMERA,
        "event_id": "7b4e2f7e-5d0e-4a53-9d2b-3f1a4c2b9e10",
        "analysis_entry_id": "5-0",
        "rule": "default",
        "channel": "webhook",
        "attempt": 1,
        "idempotency_key": "k",
    }
    (sent,) = rows_for(StreamKind.ALERTS, CAMERA, "9-0", AlertSent(**common, delivered_at=AT))
    assert sent.table == "alerts"
    assert sent.values["id"] == alert_id(CAMERA, "9-0")
    assert sent.values["event_id"] == event_id(CAMERA, common["event_id"])
    assert (sent.values["status"], sent.values["error"]) == ("sent", None)
    assert sent.values["delivered_at"] == sent.values["recorded_at"] == AT
    (failed,) = rows_for(
        StreamKind.ALERTS,
        CAMERA,
        "9-1",
        AlertFailed(**common, reason="outcome_unknown", error="boom", failed_at=AT),
    )
    assert (failed.values["status"], failed.values["reason"]) == ("failed", "outcome_unknown")
    assert failed.values["delivered_at"] is None
    assert failed.values["recorded_at"] == AT
    del common["attempt"]
    (skipped,) = rows_for(
        StreamKind.ALERTS,
        CAMERA,
        "9-2",
        AlertSkipped(**common, age_seconds=3600.0, skipped_at=AT),
    )
    assert (skipped.values["status"], skipped.values["reason"]) == ("skipped", "too_old")
    assert (skipped.values["attempt"], skipped.values["delivered_at"]) == (0, None)
    assert skipped.values["recorded_at"] == AT


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate(db_engine)
    return db_engine


@pytest.fixture
async def client(
    engine: AsyncEngine,
    database_url: str,
    db_schema: str,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    config = APIConfig(
        database_url=database_url,
        redis=RedisConfig(url=redis_url),
        database_schema=db_schema,
        stream_prefix=key_prefix,
        camera_root=tmp_path / "cameras",
        data_dir=tmp_path / "data",
        rate_limits=RateLimits(enabled=False),
    )
    async with serve(config) as http:
        yield http


async def _alerted(
    redis: Redis,
    names: StreamNames,
    engine: AsyncEngine,
    receiver: Receiver,
    *,
    settle: bool = False,
) -> tuple[str, str]:
    """Two events alerted: one sent, one that failed once (and, with `settle`, was sent on
    its next delivery); everything projected. Returns the two event ids (sent, failed)."""
    config = NotifyConfig(
        webhook=WebhookConfig(receiver.url),
        public_base_url="http://hsi.test",
        send_attempts=1,
        max_age_seconds=0,  # events of a fixed past time (`T0`): no age bound
    )
    stage = NotifyStage(
        redis=redis,
        names=names,
        rules=load_rules(None),
        channels=build_channels(config),
        config=config,
        consumer="c1",
    )
    try:
        sent, *_ = await publish_event(redis, names, at=T0)
        await drain(redis, names, stage.handle)
        receiver.always = 500
        failed, *_ = await publish_event(redis, names, at=T0 + timedelta(minutes=10))
        await drain(redis, names, stage.handle)
        if settle:
            receiver.always = None
            reclaimer = Reclaimer(
                redis,
                names,
                group=Group.NOTIFY.value,
                streams=[names.analyses(CAMERA)],
                config=ReclaimConfig(idle_ms=1, max_deliveries=5),
                consumer="reclaim",
                handler=stage.handle,
            )

            async def settled() -> bool:
                await reclaimer.run_once()
                return await pending(redis, names) == 0

            await wait_until(settled)
    finally:
        await stage.aclose()
    await redis.xadd(names.cameras, entry_fields(camera_registered(CAMERA)))
    streams = [names.stream(CAMERA, kind) for kind in (StreamKind.BATCHES, StreamKind.ANALYSES)]
    await project_all(
        redis, stage_for(redis, names, engine), [names.cameras, *streams, names.alerts(CAMERA)]
    )
    return sent.batch_id, failed.batch_id


async def test_alerts_are_listed_filtered_and_paged(
    redis_client: Redis,
    names: StreamNames,
    engine: AsyncEngine,
    receiver: Receiver,
    client: httpx.AsyncClient,
) -> None:
    """GET /api/alerts lists every outcome newest first, with filters and a keyset cursor."""
    sent_event, failed_event = await _alerted(redis_client, names, engine, receiver)
    page = (await client.get("/api/alerts")).json()
    assert [(a["event_id"], a["status"]) for a in page["items"]] == [
        (failed_event, "failed"),
        (sent_event, "sent"),
    ]
    assert page["has_more"] is False
    sent = page["items"][1]
    assert sent["channel"] == "webhook"
    assert sent["rule"] == "default"
    assert sent["attempt"] == 1
    assert sent["delivered_at"] is not None
    assert sent["links"]["event"] == f"/api/events/{sent_event}"
    failed = page["items"][0]
    assert "HTTP 500" in failed["error"]
    assert failed["reason"] == "delivery_error"
    only_sent = (await client.get("/api/alerts", params={"status": "sent"})).json()["items"]
    assert [a["event_id"] for a in only_sent] == [sent_event]
    by_event = (await client.get("/api/alerts", params={"event_id": failed_event})).json()
    assert [a["status"] for a in by_event["items"]] == ["failed"]
    assert (await client.get("/api/alerts", params={"channel": "email"})).json()["items"] == []
    assert (await client.get("/api/alerts", params={"camera_id": "garage"})).json()["items"] == []
    first = (await client.get("/api/alerts", params={"limit": 1})).json()
    assert first["has_more"] is True
    second = (
        await client.get("/api/alerts", params={"limit": 1, "cursor": first["next_cursor"]})
    ).json()
    assert [a["event_id"] for a in second["items"]] == [sent_event]
    assert second["has_more"] is False
    for bad in ({"channel": "sms"}, {"status": "lost"}, {"event_id": "x"}, {"cursor": "nope"}):
        response = await client.get("/api/alerts", params=bad)
        assert response.status_code == 400
        assert response.json()["parameter"] == next(iter(bad))


async def test_event_detail_shows_its_alert_state(
    redis_client: Redis,
    names: StreamNames,
    engine: AsyncEngine,
    receiver: Receiver,
    client: httpx.AsyncClient,
) -> None:
    """GET /api/events/{id} carries the latest outcome per channel."""
    sent_event, failed_event = await _alerted(redis_client, names, engine, receiver)
    sent = (await client.get(f"/api/events/{sent_event}")).json()
    assert [(a["channel"], a["status"]) for a in sent["alerts"]] == [("webhook", "sent")]
    failed = (await client.get(f"/api/events/{failed_event}")).json()
    assert [(a["channel"], a["status"]) for a in failed["alerts"]] == [("webhook", "failed")]


async def test_replay_and_retention_keep_alerts_equal_to_a_rebuild(
    redis_client: Redis, names: StreamNames, engine: AsyncEngine, receiver: Receiver
) -> None:
    """A rebuild reproduces the alert rows; retention deletes them with their trimmed entries,
    and a rebuild afterwards still equals the live projection."""
    await _alerted(redis_client, names, engine, receiver, settle=True)
    assert len((await dump(engine))["alerts"]) == 3
    assert (await verify(engine, redis_client, names)).equal
    later = datetime.now(UTC) + timedelta(days=40)
    report = await run_retention(
        engine, redis_client, names, [CAMERA], later, 30, delete_media=False, camera_root=None
    )
    assert report.rows["alerts"] == 3
    assert (await dump(engine))["alerts"] == []
    assert await redis_client.xlen(names.alerts(CAMERA)) == 0
    rebuilt = await verify(engine, redis_client, names)
    # Retention never rewinds a camera's last_seen / last_event_at (as before alerts).
    assert [d.table for d in rebuilt.differences] in ([], ["cameras"])

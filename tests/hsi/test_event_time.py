"""An event's time is when its pictures were taken: a Foscam snapshot named for yesterday 10:15
that arrives today is an event of yesterday 10:15 — listed by a `since`/`until` query for
yesterday, and summarised at 10:15 local time — through the whole pipeline, watcher to API; and
an object standing in an ignore zone makes no event."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import migrate
from streams.envelope import read_fields
from streams.schemas import DetectionCompleted
from streams.watch.config import WatchConfig
from streams.watch.watcher import Watcher
from tests.conftest import PHOTOS
from tests.observability.support import all_stages, api_config, serve

ZONE = "Europe/Berlin"
FOLDER = "Front Door/FI9821P_C4D655300BB8/snap"  # as a Foscam camera lays out its uploads


async def _analyzed(engine: AsyncEngine, count: int) -> None:
    async with asyncio.timeout(60):
        while True:
            async with engine.connect() as conn:
                done = await conn.scalar(
                    text("SELECT count(*) FROM events WHERE analysis_status = 'completed'")
                )
            if (done or 0) >= count:
                return
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("days_ago", [1, 7], ids=["yesterday", "last-week-backfill"])
async def test_a_late_snapshot_is_an_event_of_its_own_time(
    days_ago: int,
    redis_client: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    db_engine: AsyncEngine,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    await migrate(db_engine)
    root = tmp_path / "cameras"
    folder = root / FOLDER
    folder.mkdir(parents=True)
    zone = ZoneInfo(ZONE)
    today = datetime.now(zone).date()
    yesterday = today - timedelta(days=days_ago)  # the day the picture was taken
    late = folder / f"MDAlarm_{yesterday:%Y%m%d}-101500.jpg"
    shutil.copy(PHOTOS / "person-astronaut.jpg", late)

    pipeline = all_stages(root, key_prefix, redis_url, database_url, db_schema, timezone=ZONE)
    await pipeline.start()
    try:
        watch = WatchConfig(stable_seconds=0.2, min_image_bytes=100, timezone=ZONE)
        (outcome,) = await Watcher(redis_client, pipeline.names, root, watch).ingest(late)
        assert outcome.entry_id is not None
        await _analyzed(db_engine, 1)
    finally:
        await pipeline.stop()

    taken = datetime(yesterday.year, yesterday.month, yesterday.day, 10, 15, tzinfo=zone)
    config = api_config(database_url, db_schema, redis_url, key_prefix, tmp_path)
    async with serve(config) as client:
        day = {
            "since": datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=zone),
            "until": datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=zone)
            + timedelta(days=1),
        }
        listed = await client.get("/api/events", params={k: v.isoformat() for k, v in day.items()})
        after_that_day = await client.get("/api/events", params={"since": day["until"].isoformat()})
    assert listed.status_code == 200, listed.text
    (event,) = listed.json()["items"]
    assert datetime.fromisoformat(event["window_start"]) == taken
    assert datetime.fromisoformat(event["window_end"]) == taken
    assert "at 10:15" in event["summary"], event
    assert after_that_day.json()["items"] == []


async def test_an_object_in_an_ignore_zone_makes_no_event_and_its_file_stays_queryable(
    redis_client: Redis,
    redis_url: str,
    database_url: str,
    db_schema: str,
    db_engine: AsyncEngine,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    """The only person stands in the camera's `street` zone (ignore): the file is detected and
    listed, with no object and one ignored; no event is made."""
    await migrate(db_engine)
    zones = tmp_path / "zones.toml"
    zones.write_text(
        '[[cameras.front_door.zones]]\nname = "street"\nkind = "ignore"\n'
        "points = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n"
    )
    root = tmp_path / "cameras"
    folder = root / "Front Door"
    folder.mkdir(parents=True)
    shutil.copy(PHOTOS / "person-astronaut.jpg", folder / "a.jpg")
    pipeline = all_stages(root, key_prefix, redis_url, database_url, db_schema, zones_path=zones)
    await pipeline.start()
    try:
        watch = WatchConfig(stable_seconds=0.2, min_image_bytes=100, timezone="UTC")
        await Watcher(redis_client, pipeline.names, root, watch).ingest(folder / "a.jpg")
        async with asyncio.timeout(60):
            while True:
                async with db_engine.connect() as conn:
                    status = await conn.scalar(
                        text("SELECT detection_status FROM media_files WHERE path = :p"),
                        {"p": "Front Door/a.jpg"},
                    )
                if status == "completed":
                    break
                await asyncio.sleep(0.05)
        await pipeline.drain(15)
    finally:
        await pipeline.stop()
    detections = await redis_client.xrange(pipeline.names.detections("front_door"))
    ((_, fields),) = detections
    entry, _ = read_fields(fields)
    assert isinstance(entry, DetectionCompleted)
    assert (len(entry.objects), entry.ignored) == (0, 1)
    assert entry.zones_version is not None
    async with db_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM events")) == 0
        assert await conn.scalar(text("SELECT object_count FROM media_files")) == 0

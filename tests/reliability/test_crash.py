"""Crash suite: SIGKILL stage, reclaimer and projector processes while files flow.

Six `hsi worker` processes (two detect, one batch, one analyze, two project; each runs its
stage's reclaimer too) take 2 400 files over four cameras while a seeded killer SIGKILLs a random
one every second or so and starts it again. When the killing stops and every process is back,
each file must have exactly one detection entry, one set of detection rows and one event
(lost 0, duplicated 0), nothing may be pending or dead, and the projection must equal a fresh
replay of the streams (`hsi replay --verify`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.redis import RedisConfig, create_redis
from projections.replay import verify
from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.schemas import FileObserved
from streams.stages.outcome import Outcome, commit
from streams.watch.outcomes import OutcomeKind
from tests.fakes.rtdetr import FakeRtDetr
from tests.reliability.fleet import (
    Fleet,
    ingest_settings,
    make_files,
    pipeline_env,
    publish,
    settled,
    tally,
)

log = logging.getLogger(__name__)

CAMERAS = ["front", "back", "garage", "side"]
PER_CAMERA = 600
PARTS = 12
KILLS = 24
SEED = 20261128

WORKERS: dict[str, tuple[str, ...]] = {
    "detect-a": ("detect",),
    "detect-b": ("detect",),
    "batch": ("batch",),
    "analyze": ("analyze",),
    "project-a": ("project",),
    "project-b": ("project",),
}


@pytest.mark.timeout(400)
async def test_sigkill_storm_loses_and_duplicates_nothing(
    redis_url: str,
    own_database: str,
    own_engine: AsyncEngine,
    key_prefix: str,
    tmp_path: Path,
    rtdetr: tuple[FakeRtDetr, str],
) -> None:
    fake, rtdetr_url = rtdetr
    env = pipeline_env(redis_url, own_database, key_prefix, tmp_path, rtdetr_url)
    camera_root = tmp_path / "cameras"
    files = make_files(camera_root, CAMERAS, PER_CAMERA, PARTS)
    settings = ingest_settings(camera_root, key_prefix)
    folders = [camera_root / camera / f"part{part}" for part in range(PARTS) for camera in CAMERAS]
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(env, logs)
    for name, stages in WORKERS.items():
        fleet.worker(name, *stages)

    async def feed() -> int:
        published = 0
        for folder in folders:
            outcomes = await publish(settings, redis_url, [folder])
            published += sum(1 for o in outcomes if o.kind is OutcomeKind.OBSERVED)
            await asyncio.sleep(0.4)
        return published

    async def storm() -> None:
        chooser = random.Random(SEED)
        for _ in range(KILLS):
            await asyncio.sleep(chooser.uniform(0.6, 1.6))
            await asyncio.to_thread(fleet.restart, chooser.choice(list(WORKERS)))

    redis = create_redis(RedisConfig(url=redis_url))
    try:
        published, _ = await asyncio.gather(feed(), storm())
        assert published == len(files)
        await settled(own_engine, len(files), fleet, within=180)
        assert fleet.exited() == {}, fleet.logs()
        codes = fleet.stop()
        assert set(codes.values()) == {0}, (codes, fleet.logs())

        names = StreamNames(key_prefix)
        end = await tally(redis, own_engine, names, CAMERAS)
        lost, duplicated = end.lost_and_duplicated(len(files))
        log.warning(
            "crash suite: files=%d kills=%d starts=%d detect_requests=%d lost=%d duplicated=%d "
            "events=%d",
            len(files),
            fleet.kills,
            fleet.starts,
            fake.requests,
            lost,
            duplicated,
            end.event_rows,
        )
        assert (lost, duplicated) == (0, 0), end
        assert end.dead_entries == 0, end
        assert end.pending == 0, end
        assert end.batch_entries == end.event_rows == end.analysis_entries, end
        assert fleet.kills == KILLS

        report = await verify(own_engine, redis, names)
        assert report.equal, report.differences
    finally:
        fleet.stop()
        await redis.aclose()


def _observed(index: int) -> FileObserved:
    now = datetime.now(UTC)
    return FileObserved(
        camera_id="front",
        path=f"front/{index}.jpg",
        sha256=f"{index:064x}",
        size=2048,
        mime="image/jpeg",
        media_kind="image",
        captured_at=now,
        capture_source="mtime",
        observed_at=now,
    )


async def _add(redis: Redis, stream: str, entry: FileObserved) -> str:
    fields: Any = entry_fields(entry, {})
    added: Any = await redis.xadd(stream, fields)
    return str(added.decode())


async def test_an_entry_handled_twice_at_once_is_written_once(
    redis_client: Redis, key_prefix: str
) -> None:
    """The reclaimer hands an entry to a second consumer while the first still works on it
    (idle past the reclaim time): both commit, only the first commit writes its output."""
    names = StreamNames(key_prefix)
    source, target = names.files("front"), names.detections("front")
    await redis_client.xgroup_create(source, "detect", id="0", mkstream=True)
    first_id = await _add(redis_client, source, _observed(1))
    second_id = await _add(redis_client, source, _observed(2))
    await redis_client.xreadgroup("detect", "slow", {source: ">"}, count=10)
    await redis_client.xclaim(source, "detect", "reclaimer", 0, [first_id])

    def outcome(*ids: str) -> Outcome:
        result = Outcome()
        for entry_id in ids:
            result.emit(target, _observed(int(entry_id.split("-")[1]) + 10), {}, source=entry_id)
            result.done.append(entry_id)
        return result

    by_reclaimer = await commit(redis_client, source, "detect", outcome(first_id))
    by_slow = await commit(redis_client, source, "detect", outcome(first_id, second_id))

    assert by_reclaimer[0] is not None
    assert by_slow[0] is None
    assert by_slow[1] is not None
    assert await redis_client.xlen(target) == 2  # one output per input, not three
    assert (await redis_client.xpending(source, "detect"))["pending"] == 0

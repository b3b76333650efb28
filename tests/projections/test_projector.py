"""The projector and the project stage against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import create_engine
from projections.errors import ProjectionError
from projections.projector import ProjectionResult, Projector
from projections.replay import verify
from streams.contract import StreamEntry
from streams.envelope import entry_fields
from streams.names import Group, StreamNames
from streams.reclaim import ReclaimConfig, Reclaimer
from tests.projections.builders import (
    CAMERA,
    GARBAGE,
    T0,
    at,
    camera_registered,
    file_observed,
    publish,
    publish_story,
)
from tests.projections.support import (
    apply_streams,
    dump,
    project_all,
    read_stream,
    scalar,
    stage_for,
)


async def test_projecting_twice_changes_nothing(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """A redelivered or replayed entry is skipped: the tables stay identical, counters too."""
    story = await publish_story(redis_client, names, files=9)
    stage = stage_for(redis_client, names, engine)
    await project_all(redis_client, stage, story.streams)
    first = await dump(engine)
    again = await apply_streams(Projector(engine, names), redis_client, story.streams)
    assert sum(len(r.applied) for _, r in again) == 0
    assert sum(len(r.skipped) for _, r in again) == story.count()
    assert await dump(engine) == first
    assert await scalar(engine, "SELECT file_count FROM cameras") == 9
    assert await scalar(engine, "SELECT event_count FROM cameras") == 3
    assert len(first["projection_checkpoints"]) == story.count()
    assert len(first["media_files"]) == 9
    # files 3 and 7 fail; seven completed with a person each, files 1 and 5 with a car too
    assert len(first["detections"]) == 7 + 2
    assert len(first["events"]) == 3  # batches of three completed detections: 3 + 3 + 1
    assert len(first["event_detections"]) == 7
    assert len(first["dead_letters"]) == 1


async def test_pages_half_applied_before_give_the_rows_of_one_application(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """A random half of every stream applied first, then every stream whole: the entries
    applied before are skipped, the rest applied, and the tables equal a fresh replay."""
    story = await publish_story(redis_client, names, files=9)
    projector = Projector(engine, names)
    chooser = random.Random(11)
    first = 0
    for stream in story.streams:
        half = [e for e in await read_stream(redis_client, stream) if chooser.random() < 0.5]
        if half:
            first += len((await projector.apply(stream, half)).applied)
    results = await apply_streams(Projector(engine, names), redis_client, story.streams)
    assert sum(len(r.skipped) for _, r in results) == first
    assert first + sum(len(r.applied) for _, r in results) == story.count()
    report = await verify(engine, redis_client, names, cameras=[CAMERA])
    assert report.equal, report.differences


async def test_concurrent_projectors_apply_each_entry_once(
    engine: AsyncEngine,
    other_engine: AsyncEngine,
    redis_client: Redis,
    names: StreamNames,
    database_url: str,
) -> None:
    """Two projectors given the same entries at once: identical tables, no double counting."""
    story = await publish_story(redis_client, names, files=40)
    await apply_streams(Projector(other_engine, names), redis_client, story.streams)
    expected = await dump(other_engine)
    schema = str(await scalar(engine, "SELECT current_schema()"))
    engines = [create_engine(database_url, schema=schema) for _ in range(2)]
    try:
        projectors = [Projector(e, names) for e in engines]
        results = await asyncio.gather(
            apply_streams(projectors[0], redis_client, story.streams, page=7),
            apply_streams(projectors[1], redis_client, story.streams, page=5),
        )
    finally:
        for e in engines:
            await e.dispose()
    applied = [{(s, i) for s, r in rs for i in r.applied} for rs in results]
    assert not applied[0] & applied[1]
    assert len(applied[0] | applied[1]) == story.count()
    assert await dump(engine) == expected
    assert await scalar(engine, "SELECT file_count FROM cameras") == 40


async def test_out_of_order_streams_give_the_same_rows(
    engine: AsyncEngine, other_engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Analyses before batches, detections before files, files before registration: same rows."""
    story = await publish_story(redis_client, names, files=12)
    await apply_streams(Projector(other_engine, names), redis_client, story.streams)
    await apply_streams(Projector(engine, names), redis_client, reversed(story.streams), page=4)
    assert await dump(engine) == await dump(other_engine)
    camera = await scalar(engine, "SELECT name FROM cameras WHERE id = :c", c=CAMERA)
    assert camera == "Front Door"


async def test_interleaved_pages_give_the_same_rows(
    engine: AsyncEngine, other_engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Pages of all streams applied in a random interleaving equal the in-order projection."""
    story = await publish_story(redis_client, names, files=16)
    await apply_streams(Projector(other_engine, names), redis_client, story.streams)
    pages: dict[str, list[list[StreamEntry]]] = {}
    for stream in story.streams:
        entries = await read_stream(redis_client, stream)
        pages[stream] = [entries[i : i + 3] for i in range(0, len(entries), 3)]
    rng = random.Random(7)
    projector = Projector(engine, names)
    while pages:  # a random stream each time; within a stream, pages keep their order
        stream = rng.choice(sorted(pages))
        await projector.apply(stream, pages[stream].pop(0))
        if not pages[stream]:
            del pages[stream]
    assert await dump(engine) == await dump(other_engine)


async def test_placeholder_camera_is_named_by_its_registration(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """A file before the camera's registration makes a placeholder that the registration names."""
    projector = Projector(engine, names)
    files = names.files(CAMERA)
    await publish(redis_client, files, [file_observed(1, captured=at(-60))])
    await apply_streams(projector, redis_client, [files])
    row = await scalar(engine, "SELECT row(name, folder, file_count)::text FROM cameras")
    assert row == f"({CAMERA},{CAMERA},1)"
    await publish(redis_client, names.cameras, [camera_registered(when=T0)])
    await apply_streams(projector, redis_client, [names.cameras])
    row = await scalar(
        engine, "SELECT row(name, folder, file_count, first_seen < :t0)::text FROM cameras", t0=T0
    )
    assert row == '("Front Door","Front Door",1,t)'


async def test_poison_entries_fail_and_the_rest_is_applied(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Garbage and a misplaced entry are reported failed and stay pending; the others are
    applied and acknowledged."""
    stream = names.files(CAMERA)
    ids = await publish(
        redis_client,
        stream,
        [file_observed(1), GARBAGE, file_observed(2), entry_fields(camera_registered())],
    )
    results = await project_all(redis_client, stage_for(redis_client, names, engine), [stream])
    failed = {k: v for r in results for k, v in r.failed.items()}
    assert set(failed) == {ids[1], ids[3]}
    assert "camera.registered entry on a files stream" in failed[ids[3]]
    assert await scalar(engine, "SELECT count(*) FROM media_files") == 2
    assert await scalar(engine, "SELECT count(*) FROM projection_checkpoints") == 2
    pending = await redis_client.xpending_range(stream, Group.PROJECT.value, "-", "+", 10)
    assert sorted(p["message_id"].decode() for p in pending) == sorted(failed)


async def test_value_refused_by_postgres_fails_only_its_entry(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """An entry whose value PostgreSQL refuses (size beyond bigint) fails alone."""
    stream = names.files(CAMERA)
    ids = await publish(
        redis_client, stream, [file_observed(1), file_observed(2, size=2**63), file_observed(3)]
    )
    result = await Projector(engine, names).apply(stream, await read_stream(redis_client, stream))
    assert isinstance(result, ProjectionResult)
    assert list(result.failed) == [ids[1]]
    assert "out of range" in result.failed[ids[1]]
    assert result.applied == (ids[0], ids[2])
    assert await scalar(engine, "SELECT file_count FROM cameras") == 2


async def test_database_failure_acknowledges_nothing(
    db_engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Without the tables the stage raises ProjectionError and every entry stays pending."""
    stream = names.files(CAMERA)
    await publish(redis_client, stream, [file_observed(1), file_observed(2)])
    stage = stage_for(redis_client, names, db_engine)  # schema not migrated
    with pytest.raises(ProjectionError, match="hsi migrate"):
        await project_all(redis_client, stage, [stream])
    summary = await redis_client.xpending(stream, Group.PROJECT.value)
    assert summary["pending"] == 2


async def test_reclaimer_buries_poison_and_the_dead_letter_is_projected(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """The project group's reclaimer buries a poison entry; its dead letter becomes a row."""
    stream = names.files(CAMERA)
    ids = await publish(redis_client, stream, [file_observed(1), GARBAGE])
    stage = stage_for(redis_client, names, engine)
    await project_all(redis_client, stage, [stream])
    reclaimer = Reclaimer(
        redis_client,
        names,
        group=Group.PROJECT.value,
        streams=[stream],
        config=ReclaimConfig(idle_ms=1, max_deliveries=1),
        consumer="test-reclaim",
        handler=stage.handle,
    )
    stats = await reclaimer.run_once()  # idle 1 ms: claimed at once, delivered once already
    assert stats.dead == 1
    await project_all(redis_client, stage, [names.dead(CAMERA)])
    row = await scalar(
        engine, "SELECT row(entry_id, group_name, original_type IS NULL)::text FROM dead_letters"
    )
    assert row == f"({ids[1]},project,t)"
    assert await scalar(engine, "SELECT count(*) FROM media_files") == 1
    assert (await redis_client.xpending(stream, Group.PROJECT.value))["pending"] == 0


async def test_cameras_stream_is_projected(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """The shared cameras stream (no camera hash tag) goes through the stage too."""
    await publish(redis_client, names.cameras, [camera_registered(), camera_registered("garage")])
    stage = stage_for(redis_client, names, engine)
    await project_all(redis_client, stage, [names.cameras])
    rows = await dump(engine)
    assert [r[0] for r in rows["cameras"]] == ["front_door", "garage"]
    assert (await redis_client.xpending(names.cameras, Group.PROJECT.value))["pending"] == 0

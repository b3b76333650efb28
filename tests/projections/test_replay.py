"""Rebuilding the projection from the streams, and verifying it, on the real servers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.dead_letters import forget_dead_letter
from projections.errors import MaintenanceBusyError
from projections.replay import ReplayConfig, rebuild, verify
from projections.shadow import live_schema, maintenance_lock
from projections.tables import TABLES
from streams.dlq import drop_dead
from streams.names import StreamNames
from tests.projections.builders import T0, publish_story
from tests.projections.support import dump, project_all, scalar, stage_for


async def _schemas(engine: AsyncEngine) -> list[str]:
    """This test's schema and those made from it (`<schema>_rebuild_…`): other tests sharing the
    server make and drop their own meanwhile."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT nspname FROM pg_namespace WHERE nspname = current_schema() "
                "OR starts_with(nspname, current_schema() || '_') ORDER BY 1"
            )
        )
        return [str(r[0]) for r in rows]


async def _indexes(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT tablename, indexname FROM pg_indexes "
                "WHERE schemaname = current_schema() ORDER BY 1, 2"
            )
        )
        return [(str(r[0]), str(r[1])) for r in rows]


async def _plant(engine: AsyncEngine) -> None:
    """Rows that no entry produces, and one row changed behind the projector's back."""
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO events (id, camera_id, window_start) VALUES (:id, 'ghost', :t)"),
            {"id": uuid.UUID(int=1), "t": T0},
        )
        await conn.execute(text("UPDATE cameras SET name = 'renamed' WHERE id = 'garage'"))


async def _live(redis: Redis, names: StreamNames, engine: AsyncEngine) -> list[str]:
    story = await publish_story(redis, names, "front_door", files=10)
    await publish_story(redis, names, "garage", files=5, story=story)
    await project_all(redis, stage_for(redis, names, engine), story.streams)
    return story.streams


async def test_rebuild_equals_the_live_projection(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """A rebuild swaps in tables equal to the live ones, with every index under its name."""
    await _live(redis_client, names, engine)
    before, indexes = await _dump_and_indexes(engine)
    progress: list[tuple[int, int]] = []
    report = await rebuild(
        engine,
        redis_client,
        names,
        progress=lambda done, total: progress.append((done, total)),
        config=ReplayConfig(page_size=7),
    )
    assert report.swapped
    assert report.cameras == ("front_door", "garage")
    assert report.entries == report.applied == len(before["projection_checkpoints"])
    assert progress[-1] == (report.entries, report.entries)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert (await dump(engine), await _indexes(engine)) == (before, indexes)
    schemas = await _schemas(engine)
    assert not [s for s in schemas if "_rebuild_" in s or "_old_" in s]


async def _dump_and_indexes(
    engine: AsyncEngine,
) -> tuple[dict[str, list[tuple[object, ...]]], list[tuple[str, str]]]:
    return await dump(engine), await _indexes(engine)


async def test_rebuild_drops_rows_no_entry_produces(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Planted and altered rows are gone after a rebuild."""
    await _live(redis_client, names, engine)
    before = await dump(engine)
    await _plant(engine)
    await rebuild(engine, redis_client, names)
    assert await dump(engine) == before


async def test_verify_finds_no_difference_in_a_fresh_projection(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """verify on an up-to-date projection reports every table equal and leaves no schema."""
    await _live(redis_client, names, engine)
    before = await dump(engine)
    report = await verify(engine, redis_client, names)
    assert report.equal, report.differences
    assert len(report.tables) == len(TABLES)
    assert not report.replay.swapped
    assert await dump(engine) == before
    assert not [s for s in await _schemas(engine) if "_verify_" in s]


async def test_verify_reports_planted_and_altered_rows(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """verify names the tables that differ, counts both ways and samples the keys."""
    await _live(redis_client, names, engine)
    await _plant(engine)
    report = await verify(engine, redis_client, names)
    assert not report.equal
    diffs = {d.table: d for d in report.differences}
    assert set(diffs) == {"events", "cameras"}
    assert (diffs["events"].only_live, diffs["events"].only_rebuilt) == (1, 0)
    assert diffs["events"].sample_only_live == (str(uuid.UUID(int=1)),)
    assert (diffs["cameras"].only_live, diffs["cameras"].only_rebuilt) == (1, 1)
    assert diffs["cameras"].sample_only_live == ("garage",)


async def test_rebuild_keeps_entries_applied_live_meanwhile(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Entries appended and projected live while the rebuild reads are in the swapped tables."""
    streams = await _live(redis_client, names, engine)
    stage = stage_for(redis_client, names, engine)
    started = asyncio.Event()
    rounds = 0

    async def live_traffic() -> None:
        nonlocal rounds
        await started.wait()
        for n in range(4):
            await publish_story(
                redis_client, names, "front_door", files=3, first=100 + 10 * n, register=False
            )
            await project_all(redis_client, stage, streams)
            rounds += 1

    traffic = asyncio.create_task(live_traffic())
    rebuilt = await rebuild(
        engine,
        redis_client,
        names,
        progress=lambda done, total: started.set(),
        config=ReplayConfig(page_size=2),
    )
    await traffic
    assert rebuilt.entries >= 44
    await project_all(redis_client, stage, streams)  # the live group carries on after the swap
    assert rounds == 4
    report = await verify(engine, redis_client, names)
    assert report.equal, report.differences
    assert await scalar(engine, "SELECT file_count FROM cameras WHERE id = 'front_door'") == 22


async def test_entries_projected_live_before_the_swap_come_with_the_tail(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Entries appended and projected live after the catch-up are applied inside the swap."""
    streams = await _live(redis_client, names, engine)
    stage = stage_for(redis_client, names, engine)

    async def live_traffic() -> None:
        await publish_story(redis_client, names, "garage", files=3, first=50, register=False)
        await project_all(redis_client, stage, streams)

    report = await rebuild(engine, redis_client, names, before_swap=live_traffic)
    assert report.tail == 3 + 3 + 1 + 1 + 1  # files, detections, batch, analysis, dead letter
    after = await project_all(redis_client, stage, streams)
    assert after == []  # nothing left for the live group
    assert (await verify(engine, redis_client, names)).equal
    assert await scalar(engine, "SELECT file_count FROM cameras WHERE id = 'garage'") == 8


async def _wait_for_lock_wait(engine: AsyncEngine, query_like: str) -> None:
    async with asyncio.timeout(5):
        while True:
            waiting = await scalar(
                engine,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query ILIKE :q",
                q=query_like,
            )
            if waiting:
                return
            await asyncio.sleep(0.02)


async def test_projector_waiting_on_the_swap_writes_to_the_new_tables(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """A live batch blocked by the swap's locks finds the swapped-in tables, where its entries
    are already applied: it skips them, and nothing is counted twice."""
    streams = await _live(redis_client, names, engine)
    await publish_story(redis_client, names, "front_door", files=2, first=70, register=False)
    live = await live_schema(engine)
    async with engine.connect() as reader:
        await reader.execute(text("SELECT count(*) FROM events"))  # holds ACCESS SHARE
        replay = asyncio.create_task(rebuild(engine, redis_client, names))
        await _wait_for_lock_wait(engine, f"LOCK TABLE%{live}%")
        stage = stage_for(redis_client, names, engine)
        projecting = asyncio.create_task(project_all(redis_client, stage, streams))
        await _wait_for_lock_wait(engine, "INSERT INTO%projection_checkpoints%")
        await reader.rollback()
        report = await replay
        results = await projecting
    assert report.swapped
    assert sum(len(r.applied) for r in results) == 0
    assert sum(len(r.skipped) for r in results) == 2 + 2 + 1 + 1 + 1
    assert (await verify(engine, redis_client, names)).equal
    assert await scalar(engine, "SELECT file_count FROM cameras WHERE id = 'front_door'") == 12


async def test_second_maintenance_run_is_refused(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """While a replay (or retention) holds the maintenance lock, another one is refused."""
    live = await live_schema(engine)
    async with maintenance_lock(engine, live, "a test"):
        with pytest.raises(MaintenanceBusyError, match="another replay"):
            await rebuild(engine, redis_client, names)


async def test_dropped_dead_letter_is_forgotten_as_a_rebuild_would(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """`hsi dlq drop` deletes the entry; forgetting its row keeps live equal to a rebuild."""
    await _live(redis_client, names, engine)
    dead_id = (await redis_client.xrange(names.dead("garage")))[0][0].decode()
    await drop_dead(redis_client, names, "garage", dead_id)
    stale = await verify(engine, redis_client, names)
    assert {d.table: d.only_live for d in stale.differences} == {
        "dead_letters": 1,
        "projection_checkpoints": 1,
    }
    assert await forget_dead_letter(engine, names, "garage", dead_id)
    assert (await verify(engine, redis_client, names)).equal

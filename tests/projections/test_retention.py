"""Retention: MINID decisions (pure), then trimming and deleting on the real servers."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.replay import verify
from projections.retention import (
    GroupPosition,
    LevelCount,
    RetentionReport,
    next_id,
    run_retention,
    safe_minid,
)
from projections.retention_rules import parse_rules
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from tests.projections.builders import CAMERA, GARBAGE, file_observed, publish, publish_story
from tests.projections.support import dump, project_all, scalar, stage_for

CUTOFF = 1_000_000


@pytest.mark.parametrize(
    ("entry_id", "expected"),
    [
        ("5-0", "5-1"),
        ("0-0", "0-1"),
        ("7", "7-1"),
        (f"5-{2**64 - 1}", "6-0"),
    ],
)
def test_next_id(entry_id: str, expected: str) -> None:
    """The id right after an id, carrying a full sequence into the milliseconds."""
    assert next_id(entry_id) == expected


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([], f"{CUTOFF}-0"),
        ([GroupPosition("project", f"{CUTOFF + 50}-0")], f"{CUTOFF}-0"),
        ([GroupPosition("project", f"{CUTOFF - 10}-3")], f"{CUTOFF - 10}-4"),
        ([GroupPosition("project", "0-0")], "0-1"),
        (
            [GroupPosition("detect", f"{CUTOFF + 50}-0", oldest_pending_id=f"{CUTOFF - 99}-2")],
            f"{CUTOFF - 99}-2",
        ),
        (
            [
                GroupPosition("project", f"{CUTOFF + 50}-0"),
                GroupPosition("detect", f"{CUTOFF - 20}-0", oldest_pending_id=f"{CUTOFF - 30}-0"),
                GroupPosition("batch", f"{CUTOFF - 25}-0"),
            ],
            f"{CUTOFF - 30}-0",
        ),
        ([GroupPosition("project", f"{CUTOFF}-0", oldest_pending_id=f"{CUTOFF}-0")], "1000000-0"),
    ],
    ids=[
        "no-groups",
        "caught-up",
        "behind-cutoff",
        "never-read",
        "pending-below",
        "slowest-wins",
        "pending-at-cutoff",
    ],
)
def test_safe_minid(groups: list[GroupPosition], expected: str) -> None:
    """MINID is the cutoff lowered to every group's oldest pending and next undelivered entry."""
    assert safe_minid(CUTOFF, groups) == expected


def _now() -> datetime:
    return datetime.now(UTC)


async def test_retention_never_trims_what_a_group_has_not_acknowledged(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Entries pending for a group and entries not yet delivered to it survive the trim."""
    old = _now() - timedelta(days=40)
    old_ms = int(old.timestamp() * 1000)
    stream = names.files(CAMERA)
    ids = [f"{old_ms}-{n}" for n in range(6)]
    await publish(redis_client, stream, [file_observed(n, captured=old) for n in range(6)], ids)
    await project_all(redis_client, stage_for(redis_client, names, engine), [stream])
    # `detect` read three entries and acknowledged the first; three were never delivered to it.
    await ensure_group(redis_client, stream, Group.DETECT.value)
    await redis_client.xreadgroup(Group.DETECT.value, "slow", {stream: ">"}, count=3)
    await redis_client.xack(stream, Group.DETECT.value, ids[0])
    # `batch` on the detections stream read nothing yet.
    detections = names.detections(CAMERA)
    await publish(redis_client, detections, [GARBAGE], [f"{old_ms}-0"])
    await ensure_group(redis_client, detections, Group.PROJECT.value)
    await ensure_group(redis_client, detections, Group.BATCH.value)
    report = await run_retention(
        engine, redis_client, names, [CAMERA], _now(), 30, delete_media=False, camera_root=None
    )
    trims = {t.stream: t for t in report.streams}
    assert trims[stream].minid == ids[1]
    assert trims[stream].trimmed == 1
    assert [i.decode() for i, _ in await redis_client.xrange(stream)] == ids[1:]
    assert trims[detections].trimmed == 0
    assert await redis_client.xlen(detections) == 1
    # Only the trimmed entry is forgotten; the pending ones keep their tracking rows.
    assert report.rows["media_files"] == 1
    assert report.rows["projection_checkpoints"] == 1
    assert await scalar(engine, "SELECT count(*) FROM projection_checkpoints") == 5
    assert await scalar(engine, "SELECT file_count FROM cameras") == 5


async def test_stream_without_project_group_is_never_trimmed(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Entries the projector never saw (no `project` group yet) are not trimmed."""
    old_ms = int((_now() - timedelta(days=40)).timestamp() * 1000)
    stream = names.files(CAMERA)
    await publish(redis_client, stream, [file_observed(1)], [f"{old_ms}-0"])
    report = await run_retention(
        engine, redis_client, names, [CAMERA], _now(), 30, delete_media=False, camera_root=None
    )
    trim = {t.stream: t for t in report.streams}[stream]
    assert (trim.minid, trim.trimmed) == (None, 0)
    assert trim.skipped is not None
    assert "project" in trim.skipped
    assert await redis_client.xlen(stream) == 1


async def test_retention_deletes_old_rows_and_a_rebuild_still_equals_live(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """Old entries are trimmed and their rows, tracking rows and media deleted, with counts;
    recent ones stay; a rebuild afterwards equals the live projection."""
    now = _now()
    old = now - timedelta(days=40)
    story = await publish_story(
        redis_client, names, files=8, base=old, id_ms=int(old.timestamp() * 1000)
    )
    await publish_story(redis_client, names, files=4, first=100, base=now, story=story)
    await project_all(redis_client, stage_for(redis_client, names, engine), story.streams)
    root = tmp_path / "cameras"
    for n in (*range(8), *range(100, 104)):
        target = root / file_observed(n).path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"jpeg")
    before = await dump(engine)
    report = await run_retention(
        engine, redis_client, names, [CAMERA], now, 30, delete_media=True, camera_root=root
    )
    after = await dump(engine)
    deleted = {table: len(before[table]) - len(after[table]) for table in before}
    assert report.rows == {k: v for k, v in deleted.items() if k != "cameras"}
    assert deleted["media_files"] == 8
    assert deleted["events"] == 2  # six completed detections of old files: batches of three
    assert deleted["dead_letters"] == 1
    assert len(after["media_files"]) == 4
    assert report.trimmed == 8 + 8 + 2 + 2 + 1
    assert report.media_deleted == 8
    assert sorted(p.name for p in root.rglob("*.jpg")) == [
        f"MDAlarm_{n:04d}.jpg" for n in range(100, 104)
    ]
    assert await scalar(engine, "SELECT file_count FROM cameras") == 4
    assert await scalar(engine, "SELECT event_count FROM cameras") == 1
    assert (await verify(engine, redis_client, names)).equal


async def test_media_outside_the_camera_root_is_never_deleted(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """Paths that leave the root, or pass through a symlink, are refused and reported."""
    now = _now()
    old_ms = int((now - timedelta(days=40)).timestamp() * 1000)
    root = tmp_path / "cameras"
    outside = tmp_path / "outside"
    (root / "Front Door").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.jpg").write_bytes(b"precious")
    (root / "Front Door" / "plain.jpg").write_bytes(b"jpeg")
    os.symlink(outside, root / "Front Door" / "link")
    entries = [
        file_observed(n, captured=now - timedelta(days=40)).model_copy(update={"path": path})
        for n, path in enumerate(
            ["Front Door/plain.jpg", "Front Door/link/keep.jpg", "../outside/keep.jpg"]
        )
    ]
    stream = names.files(CAMERA)
    await publish(redis_client, stream, entries, [f"{old_ms}-{n}" for n in range(3)])
    await project_all(redis_client, stage_for(redis_client, names, engine), [stream])
    report = await run_retention(
        engine, redis_client, names, [CAMERA], now, 30, delete_media=True, camera_root=root
    )
    assert report.media_deleted == 1
    assert sorted(report.media_refused) == ["../outside/keep.jpg", "Front Door/link/keep.jpg"]
    assert (outside / "keep.jpg").read_bytes() == b"precious"
    assert not (root / "Front Door" / "plain.jpg").exists()


async def test_plan_equals_the_run_and_level_rules_spare_rows(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """`plan` changes nothing and counts what `run` then deletes, per camera and level; level
    rules delete files only, so their rows stay and a rebuild still equals the live tables."""
    now = _now()
    old, mid = now - timedelta(days=40), now - timedelta(days=20)
    story = await publish_story(
        redis_client, names, files=8, base=old, id_ms=int(old.timestamp() * 1000)
    )
    await publish_story(
        redis_client, names, files=8, first=200, base=mid, story=story,
        id_ms=int(mid.timestamp() * 1000), register=False,
    )  # fmt: skip
    await publish_story(redis_client, names, files=4, first=100, base=now, story=story)
    await project_all(redis_client, stage_for(redis_client, names, engine), story.streams)
    root = tmp_path / "cameras"
    sizes = {}
    for n in (*range(8), *range(200, 208), *range(100, 104)):
        target = root / file_observed(n).path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"j" * (n + 1))
        sizes[n] = n + 1
    # A story's first batch (files 0-2) is low, its second (4-6) unrated (analysis failed),
    # files 3 and 7 (detection failed) are in no event.
    rules = parse_rules({"media": {"low": 7, "none": 10}}, 30)

    async def retention(dry_run: bool) -> RetentionReport:
        return await run_retention(
            engine, redis_client, names, [CAMERA], now, 30, delete_media=True,
            camera_root=root, rules=rules, dry_run=dry_run,
        )  # fmt: skip

    before = await dump(engine)
    entries = {s: await redis_client.xlen(s) for s in story.streams}
    plan = await retention(dry_run=True)
    assert await dump(engine) == before
    assert {s: await redis_client.xlen(s) for s in story.streams} == entries
    assert len(list(root.rglob("*.jpg"))) == 20
    run = await retention(dry_run=False)
    assert (plan.planned, run.planned) == (True, False)
    assert (plan.rows, plan.trimmed, plan.levels) == (run.rows, run.trimmed, run.levels)
    assert (plan.media_deleted, plan.media_bytes) == (run.media_deleted, run.media_bytes)
    gone = [*range(8), 200, 201, 202, 203, 207]
    assert run.levels == {
        (CAMERA, "low"): LevelCount(events=1, media_files=6, media_bytes=sum(
            sizes[n] for n in (0, 1, 2, 200, 201, 202))),
        (CAMERA, "none"): LevelCount(events=0, media_files=4, media_bytes=sum(
            sizes[n] for n in (3, 7, 203, 207))),
        (CAMERA, "unrated"): LevelCount(events=1, media_files=3, media_bytes=sum(
            sizes[n] for n in (4, 5, 6))),
    }  # fmt: skip
    assert (run.media_deleted, run.media_bytes) == (13, sum(sizes[n] for n in gone))
    assert sorted(p.name for p in root.rglob("*.jpg")) == [
        f"MDAlarm_{n:04d}.jpg" for n in (100, 101, 102, 103, 204, 205, 206)
    ]
    assert run.rows["media_files"] == 8  # the 20-day-old rows stay, files gone or not
    assert await scalar(engine, "SELECT count(*) FROM media_files") == 12
    assert (await verify(engine, redis_client, names)).equal
    again = await retention(dry_run=True)
    assert (again.trimmed, again.media_deleted, again.levels) == (0, 0, {})
    assert set(again.rows.values()) == {0}


async def test_a_camera_keeps_rows_as_long_as_its_longest_rule(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """A camera whose high events keep media a year keeps its rows and entries a year too."""
    now = _now()
    old = now - timedelta(days=40)
    story = await publish_story(
        redis_client, names, files=4, base=old, id_ms=int(old.timestamp() * 1000)
    )
    await project_all(redis_client, stage_for(redis_client, names, engine), story.streams)
    rules = parse_rules({"cameras": {CAMERA: {"media": {"high": 365}}}}, 30)
    report = await run_retention(
        engine, redis_client, names, [CAMERA], now, 30, delete_media=True,
        camera_root=tmp_path, rules=rules,
    )  # fmt: skip
    assert report.cutoffs[CAMERA] == now - timedelta(days=365)
    assert report.trimmed == 0
    assert set(report.rows.values()) == {0}

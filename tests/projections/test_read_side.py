"""The glue the CLI calls (`hsi.app.read_side`): camera discovery, retention over them, ETA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.read_side import (
    eta_seconds,
    known_cameras,
    replay,
    retention,
    verify,
    verify_lines,
)
from streams.names import TRIMMED, StreamNames
from tests.projections.builders import CAMERA, file_observed, publish, publish_story
from tests.projections.support import project_all, stage_for


def _projected(names: StreamNames, camera: str) -> list[str]:
    return [names.stream(camera, kind) for kind in TRIMMED]


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "expected"),
    [(0, 100, 5.0, None), (50, 100, 0.0, None), (25, 100, 5.0, 15.0), (100, 100, 9.0, 0.0)],
)
def test_eta_seconds(done: int, total: int, elapsed: float, expected: float | None) -> None:
    """The time left at the rate so far, once there is a rate."""
    assert eta_seconds(done, total, elapsed) == expected


async def test_cli_glue_runs_replay_verify_and_retention(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """Cameras come from the camera set and the table; replay, verify and retention run."""
    story = await publish_story(redis_client, names, files=4)
    await redis_client.sadd(names.camera_set, "garage")
    stage = stage_for(redis_client, names, engine)
    await project_all(redis_client, stage, [*story.streams, *_projected(names, "garage")])
    assert await known_cameras(engine, redis_client, names) == [CAMERA, "garage"]
    assert (await replay(engine, redis_client, names)).swapped
    checked = await verify(engine, redis_client, names)
    assert verify_lines(checked) == [f"projection equals a rebuild of {story.count()} entries"]
    old = datetime.now(UTC) - timedelta(days=40)
    await publish(
        redis_client,
        names.files("garage"),
        [file_observed(1, "garage", captured=old)],
        [f"{int(old.timestamp() * 1000)}-0"],
    )
    await project_all(redis_client, stage, [names.files("garage")])
    report = await retention(engine, redis_client, names, retention_days=30)
    assert report.rows["media_files"] == 1
    assert {t.stream for t in report.streams} == set(
        _projected(names, CAMERA) + _projected(names, "garage")
    )

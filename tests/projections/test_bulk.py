"""A rebuild's bulk load equals the live projector, on streams holding every kind of entry, and
falls back to the projector's pages when PostgreSQL refuses its rows."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from projections import bulk
from projections.replay import rebuild, verify
from projections.tables import WRITE_ORDER
from streams.names import PROJECTED, StreamNames
from streams.reanalysis.runner import adopt
from streams.schemas import (
    AlertFailed,
    AlertSent,
    AlertSkipped,
    AnalysisCompleted,
    Box,
    DetectedObject,
    ReanalysisAdopted,
    ReanalysisEnded,
    ReanalysisFailed,
    ReanalysisResult,
    ReanalysisStarted,
)
from tests.projections.builders import (
    GARBAGE,
    analysis_completed,
    analysis_failed,
    at,
    batch_closed,
    camera_registered,
    detection_completed,
    detection_failed,
    entry_dead,
    file_observed,
    publish,
    publish_story,
)
from tests.projections.support import dump, project_all, scalar, stage_for
from tests.streams.test_reanalysis import _seed, stricter_run

PORCH = "porch"
RUN = "run-shared"


def _seen(label: str, zones: tuple[str, ...] = (), frame: float | None = None) -> DetectedObject:
    return DetectedObject(
        label=label,
        confidence=0.8,
        bbox=Box(x=5.0, y=6.0, width=70.5, height=80.25),
        zones=zones,
        frame_seconds=frame,
    )


async def _porch(redis: Redis, names: StreamNames, summary: str = "a person at the door") -> None:
    """A camera registered twice, with zones, a video object, a file published twice, a file
    detected twice (failed, then completed), a detection of a file its stream no longer holds,
    a batch closed twice and judged three times (failed, completed, adopted), alerts of every
    outcome, a re-analysis run it shares with `garage`, and two entries no projector can read."""
    await publish(
        redis,
        names.cameras,
        [
            camera_registered(PORCH, name="Porch"),
            camera_registered(PORCH, name="Porch 2", when=at(3600)),
        ],
    )
    files = [file_observed(n, PORCH) for n in range(3)]
    file_ids = await publish(redis, names.files(PORCH), [*files, files[1], GARBAGE])
    zoned = detection_completed(
        files[0], file_ids[0], [_seen("person", ("driveway", "door")), _seen("car")], PORCH
    )
    video = detection_completed(files[2], file_ids[2], [_seen("dog", ("lawn",), 1.5)], PORCH)
    again = detection_completed(files[1], file_ids[1], [_seen("person", ("door",))], PORCH)
    orphan = detection_completed(file_observed(9, PORCH), "1-999", [_seen("cat")], PORCH)
    detections = [zoned, detection_failed(files[1], file_ids[1], PORCH), again, video, orphan]
    detection_ids = await publish(
        redis, names.detections(PORCH), [*detections, camera_registered(PORCH)]
    )
    pairs = list(zip(detection_ids, detections, strict=False))
    first = batch_closed(str(uuid.UUID(int=7001)), [pairs[0], pairs[2]], PORCH)
    closed_again = first.model_copy(update={"closed_at": first.closed_at + timedelta(seconds=5)})
    second = batch_closed(str(uuid.UUID(int=7002)), [pairs[3]], PORCH)
    batch_ids = await publish(redis, names.batches(PORCH), [first, closed_again, second])
    judged = analysis_completed(first, batch_ids[1], 55, PORCH)
    judged = judged.model_copy(update={"summary": summary})
    analysis_ids = await publish(
        redis,
        names.analyses(PORCH),
        [
            analysis_failed(first, batch_ids[0], PORCH),
            judged,
            analysis_completed(second, batch_ids[2], 20, PORCH),
        ],
    )
    adopted = AnalysisCompleted(
        **{
            **judged.model_dump(),
            "risk_score": 80,
            "risk_level": "high",
            "supersedes": analysis_ids[1],
            "run_id": RUN,
            "alert": False,
        }
    )
    await publish(redis, names.analyses(PORCH), [adopted])
    await publish(
        redis,
        names.dead(PORCH),
        [entry_dead(names.detections(PORCH), "5-0", None, PORCH, when=at(90))],
    )
    alert = {
        "camera_id": PORCH,
        "event_id": first.batch_id,
        "analysis_entry_id": analysis_ids[1],
        "rule": "person",
        "idempotency_key": f"{PORCH}:{first.batch_id}:webhook",
    }
    await publish(
        redis,
        names.alerts(PORCH),
        [
            AlertFailed(**alert, channel="webhook", attempt=1, error="503", failed_at=at(100)),
            AlertSent(**alert, channel="webhook", attempt=2, delivered_at=at(110)),
            AlertSkipped(**alert, channel="email", age_seconds=7200.0, skipped_at=at(120)),
        ],
    )
    started = {
        "run_id": RUN,
        "analyzer": "rules",
        "config_hash": "c0ffee",
        "selection": "every batch",
        "until_entry_id": batch_ids[-1],
        "started_at": at(200),
    }
    result = {"run_id": RUN, "current_entry_id": analysis_ids[1]}
    await publish(
        redis,
        names.reanalyses(PORCH),
        [
            ReanalysisStarted(camera_id=PORCH, **started),
            ReanalysisResult(
                camera_id=PORCH,
                **result,
                batch_id=first.batch_id,
                batch_entry_id=batch_ids[1],
                current_score=55,
                current_level="medium",
                risk_score=80,
                risk_level="high",
                summary="a person, closer",
                reasoning="stricter",
                analyzer="rules",
                latency_ms=0.4,
                prompt_tokens=120,
                completion_tokens=30,
                analyzed_at=at(210),
            ),
            ReanalysisFailed(
                camera_id=PORCH,
                **result,
                batch_id=second.batch_id,
                batch_entry_id=batch_ids[2],
                error="timeout",
                failed_at=at(220),
            ),
            ReanalysisEnded(camera_id=PORCH, run_id=RUN, reason="completed", ended_at=at(230)),
            ReanalysisAdopted(camera_id=PORCH, run_id=RUN, analyses=1, adopted_at=at(240)),
        ],
    )
    await publish(
        redis,
        names.reanalyses("garage"),
        [
            ReanalysisStarted(camera_id="garage", **{**started, "started_at": at(190)}),
            ReanalysisEnded(camera_id="garage", run_id=RUN, reason="cancelled", ended_at=at(260)),
        ],
    )


async def _history(
    redis: Redis, names: StreamNames, engine: AsyncEngine, summary: str = "a person at the door"
) -> None:
    """Every kind of entry, projected live: `publish_story` for garage and front_door, a
    re-analysis run of front_door adopted, and the porch's entries."""
    story = await publish_story(redis, names, "garage", files=9)
    await publish_story(redis, names, "front_door", files=5, first=20, story=story)
    await _seed(redis, names, 4)
    run_id = await stricter_run(redis, names)
    await adopt(redis, names, ["front_door"], run_id)
    await _porch(redis, names, summary)
    await redis.sadd(names.camera_set, PORCH)
    await redis.xadd(names.cameras, GARBAGE)  # type: ignore[arg-type]
    streams = [names.cameras] + [
        names.stream(camera, kind)
        for camera in ("garage", "front_door", PORCH)
        for kind in PROJECTED
    ]
    # Unreadable entries stay pending: project until nothing new is left, as the stage does.
    await project_all(redis, stage_for(redis, names, engine), streams)


async def test_a_bulk_rebuild_of_every_kind_of_entry_equals_the_live_projection(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames
) -> None:
    """verify (`hsi replay --verify`) finds the bulk load equal to the live projector's tables;
    the rebuild swaps in the same rows."""
    await _history(redis_client, names, engine)
    report = await verify(engine, redis_client, names)
    assert report.equal, report.differences
    assert report.replay.bulk
    assert report.replay.failed == 3  # GARBAGE on cameras and files, a foreign entry
    assert report.replay.entries == report.replay.applied + report.replay.failed
    before = await dump(engine)
    rebuilt = await rebuild(engine, redis_client, names)
    assert rebuilt.bulk
    assert await dump(engine) == before
    # the entries that make the merges interesting are there
    assert await scalar(engine, "SELECT name FROM cameras WHERE id = 'porch'") == "Porch 2"
    assert await scalar(engine, "SELECT file_count FROM cameras WHERE id = 'porch'") == 4
    assert await scalar(engine, "SELECT cameras FROM reanalysis_runs WHERE id = :r", r=RUN) == 2
    zones = "SELECT zones FROM events WHERE id = :e"
    assert await scalar(engine, zones, e=uuid.UUID(int=7001)) == ["door", "driveway"]
    orphan = "SELECT size IS NULL AND path IS NOT NULL FROM media_files WHERE entry_id = '1-999'"
    assert await scalar(engine, orphan)
    adopted = "SELECT count(DISTINCT camera_id) FROM analysis_history WHERE supersedes IS NOT NULL"
    assert await scalar(engine, adopted) == 2
    assert await scalar(engine, "SELECT count(*) FROM alerts") == 3


def _early(kind: str) -> frozenset[str]:
    """A wrong schedule: every table written after every stream."""
    return frozenset(WRITE_ORDER)


@pytest.mark.parametrize("cause", ["a NUL in a summary", "rows written too early"])
async def test_refused_bulk_rows_fall_back_to_the_projector(
    engine: AsyncEngine,
    redis_client: Redis,
    names: StreamNames,
    monkeypatch: pytest.MonkeyPatch,
    cause: str,
) -> None:
    """A value COPY cannot carry, or a key written twice, rolls the bulk load back; the
    projector loads the streams page by page instead and the rebuild still equals live."""
    summary = "a person\x00 at the door" if cause.startswith("a NUL") else "a person"
    if cause == "rows written too early":
        monkeypatch.setattr(bulk, "final_after", _early)
    await _history(redis_client, names, engine, summary)
    report = await verify(engine, redis_client, names)
    assert not report.replay.bulk
    assert report.equal, report.differences
    assert report.replay.entries == report.replay.applied + report.replay.failed
    before = await dump(engine)
    assert not (await rebuild(engine, redis_client, names)).bulk
    assert await dump(engine) == before

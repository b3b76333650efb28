"""Re-analysis runs on real streams: the report of a candidate, a run killed and resumed, an LLM
candidate that fails on some batches, and adoption through to the projection and its replay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.reanalysis import CandidateOptions, build_candidate
from hsi.infra.db import migrate
from hsi.settings.model import load_settings
from projections.replay import verify
from streams.analyzers import Analysis, BatchSummary, RulesAnalyzer
from streams.analyzers.rules import PERSON, RulesConfig, parse_rules_config
from streams.envelope import entry_fields, read_fields
from streams.names import PROJECTED, StreamNames
from streams.reanalysis.report import build_report
from streams.reanalysis.runner import (
    Candidate,
    RunError,
    RunWorker,
    adopt,
    run_results,
    run_state,
    start_run,
)
from streams.reanalysis.selection import Selection
from streams.schemas import (
    AnalysisCompleted,
    BatchClosed,
    BatchDetection,
    DetectedObject,
    ReanalysisResult,
)
from streams.stages.analyze import summarize
from tests.fakes.llm import serve_fake_llm
from tests.projections.support import project_all, scalar, stage_for

CAMERA = "front_door"
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STRICTER = {"weights": {"person": {"base": 70}}}  # a person by day: low → high


def _batch(n: int, label: str) -> BatchClosed:
    start = NOON + timedelta(minutes=10 * n)
    obj = DetectedObject(
        label=label, confidence=0.9, bbox={"x": 1, "y": 1, "width": 9, "height": 9}
    )
    return BatchClosed(
        camera_id=CAMERA,
        batch_id=str(uuid.UUID(int=1000 + n)),
        detections=(
            BatchDetection(
                entry_id=f"{n}-0",
                file_entry_id=f"{n}-0",
                path=f"Front Door/MDAlarm_{n:04d}.jpg",
                captured_at=start,
                objects=(obj,),
            ),
        ),
        window_start=start,
        window_end=start,
        close_reason="idle",
        detection_count=1,
        object_types=(label,),
        max_confidence=0.9,
        fast_path=False,
        closed_at=start + timedelta(seconds=30),
    )


async def _seed(redis: Redis, names: StreamNames, count: int) -> list[BatchClosed]:
    """`count` batches (a person, then a cat, alternately), each analyzed by the default rules."""
    rules = RulesAnalyzer()
    batches = []
    await redis.sadd(names.camera_set, CAMERA)
    for n in range(count):
        batch = _batch(n, "person" if n % 2 == 0 else "cat")
        entry_id = (await redis.xadd(names.batches(CAMERA), entry_fields(batch))).decode()  # type: ignore[arg-type]
        judged = await rules.analyze(summarize(batch, "UTC"))
        analysis = AnalysisCompleted(
            camera_id=CAMERA,
            batch_id=batch.batch_id,
            batch_entry_id=entry_id,
            risk_score=judged.risk_score,
            risk_level=judged.risk_level.value,
            summary=judged.summary,
            reasoning=judged.reasoning,
            analyzer="rules",
            latency_ms=0.1,
            analyzed_at=batch.closed_at,
        )
        await redis.xadd(names.analyses(CAMERA), entry_fields(analysis))  # type: ignore[arg-type]
        batches.append(batch)
    return batches


def _stricter() -> Candidate:
    config = parse_rules_config(STRICTER, RulesConfig())
    analyzer = RulesAnalyzer(config.thresholds, categories=config.categories)
    return Candidate(analyzer, "rules", None, config.describe())


async def stricter_run(redis: Redis, names: StreamNames, selection: Selection | None = None) -> str:
    """A run of the stricter rules over the camera's batches, worked to its end: its id."""
    run_id = await start_run(redis, names, [CAMERA], _stricter(), selection or Selection())
    await RunWorker(redis, names, _stricter(), run_id).run([CAMERA])
    return run_id


async def _types(redis: Redis, stream: str) -> list[str]:
    rows: Any = await redis.xrange(stream)
    return [read_fields(fields)[0].type for _, fields in rows]


async def test_a_run_reports_what_stricter_weights_would_change(
    redis_client: Redis, key_prefix: str
) -> None:
    names = StreamNames(key_prefix)
    await _seed(redis_client, names, 10)
    analyses_before = await redis_client.xlen(names.analyses(CAMERA))
    run_id = await start_run(redis_client, names, [CAMERA], _stricter(), Selection())
    ended = await RunWorker(redis_client, names, _stricter(), run_id).run([CAMERA])
    assert ended == {CAMERA: "completed"}

    report = build_report(await run_results(redis_client, names, [CAMERA], run_id))
    assert report.matrix == {("low", "high"): 5, ("low", "low"): 5}
    assert (report.analyzed, report.failed, report.changed) == (10, 0, 5)
    assert len(report.raised) == 5
    assert report.lowered == ()
    assert report.shift_median == pytest.approx(20.0)  # five of 0, five of +40
    text = report.render()
    assert "would now alert: 5" in text
    # the run changed nothing current and alerted nobody; its group is gone
    assert await redis_client.xlen(names.analyses(CAMERA)) == analyses_before
    assert await redis_client.xlen(names.alerts(CAMERA)) == 0
    groups: Any = await redis_client.xinfo_groups(names.batches(CAMERA))
    assert groups == []


async def test_a_selection_limits_the_batches_judged(redis_client: Redis, key_prefix: str) -> None:
    names = StreamNames(key_prefix)
    batches = await _seed(redis_client, names, 10)
    since = batches[4].window_start
    selection = Selection(since=since, levels=frozenset({"low"}), event_ids=frozenset())
    run_id = await start_run(redis_client, names, [CAMERA], _stricter(), selection)
    await RunWorker(redis_client, names, _stricter(), run_id).run([CAMERA])
    judged = await run_results(redis_client, names, [CAMERA], run_id)
    assert sorted(i.batch_id for i in judged) == sorted(b.batch_id for b in batches[4:])
    only = Selection(levels=frozenset({"high"}))  # nothing is high now
    other = await start_run(redis_client, names, [CAMERA], _stricter(), only)
    await RunWorker(redis_client, names, _stricter(), other).run([CAMERA])
    assert await run_results(redis_client, names, [CAMERA], other) == []


class _Stalls:
    """The stricter rules, which stop answering after `answers` batches (a run killed mid-way)."""

    name = "rules"

    def __init__(self, answers: int) -> None:
        self._inner = _stricter().analyzer
        self._left = answers
        self.calls = 0

    async def analyze(self, batch: BatchSummary) -> Analysis:
        self.calls += 1
        if self._left == 0:
            await asyncio.Event().wait()  # never answers: the task is killed here
        self._left -= 1
        return await self._inner.analyze(batch)

    async def aclose(self) -> None:
        return None


async def test_a_run_killed_mid_way_resumes_and_judges_every_batch_once(
    redis_client: Redis, key_prefix: str
) -> None:
    names = StreamNames(key_prefix)
    batches = await _seed(redis_client, names, 12)
    candidate = _stricter()
    run_id = await start_run(redis_client, names, [CAMERA], candidate, Selection())
    stalling = Candidate(_Stalls(answers=5), "rules", None, candidate.description)
    task = asyncio.create_task(
        RunWorker(redis_client, names, stalling, run_id, concurrency=1).run([CAMERA])
    )
    async with asyncio.timeout(30):
        while True:
            if len((await run_state(redis_client, names, CAMERA, run_id)).results) == 5:
                break
            await asyncio.sleep(0.02)
    task.cancel()  # the process dies with the sixth batch in hand (delivered, not acknowledged)
    with pytest.raises(asyncio.CancelledError):
        await task

    ended = await RunWorker(redis_client, names, candidate, run_id).run([CAMERA])
    assert ended == {CAMERA: "completed"}
    results = (await run_state(redis_client, names, CAMERA, run_id)).results
    assert sorted(r.batch_id for r in results) == sorted(b.batch_id for b in batches)
    assert len({r.batch_id for r in results}) == len(results)  # each judged once


async def test_a_failing_llm_candidate_reports_failures_and_touches_nothing(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    names = StreamNames(key_prefix)
    await _seed(redis_client, names, 6)
    before = await _types(redis_client, names.analyses(CAMERA))
    with serve_fake_llm() as (fake, url):
        settings = load_settings(data_dir=tmp_path, llm_url=url, llm_json_schema=False)
        candidate = build_candidate(settings, CandidateOptions("llm", model="fake-model"))
        fake.fail_times(2, status=400)  # refused: not worth a retry
        run_id = await start_run(redis_client, names, [CAMERA], candidate, Selection())
        worker = RunWorker(redis_client, names, candidate, run_id, concurrency=1)
        try:
            assert await worker.run([CAMERA]) == {CAMERA: "completed"}
        finally:
            await candidate.analyzer.aclose()
    report = build_report(await run_results(redis_client, names, [CAMERA], run_id))
    assert (report.analyzed, report.failed) == (4, 2)
    assert sum(n for (_, candidate), n in report.matrix.items() if candidate == "high") == 4
    assert report.prompt_tokens > 0
    assert await _types(redis_client, names.analyses(CAMERA)) == before
    with pytest.raises(RunError, match="no run"):
        await adopt(redis_client, names, [CAMERA], "no-such-run")


async def test_a_token_budget_ends_the_run(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    names = StreamNames(key_prefix)
    await _seed(redis_client, names, 6)
    with serve_fake_llm() as (_, url):
        settings = load_settings(data_dir=tmp_path, llm_url=url)
        candidate = build_candidate(settings, CandidateOptions("llm", model="fake-model"))
        run_id = await start_run(
            redis_client, names, [CAMERA], candidate, Selection(), max_tokens=1
        )
        worker = RunWorker(redis_client, names, candidate, run_id, concurrency=1)
        try:
            assert await worker.run([CAMERA]) == {CAMERA: "budget"}
        finally:
            await candidate.analyzer.aclose()
    assert len((await run_state(redis_client, names, CAMERA, run_id)).results) == 1


async def test_adoption_makes_the_run_current_without_alerts_and_replays(
    redis_client: Redis, key_prefix: str, db_engine: AsyncEngine
) -> None:
    await migrate(db_engine)
    names = StreamNames(key_prefix)
    await _seed(redis_client, names, 6)
    run_id = await stricter_run(redis_client, names)
    streams = [names.stream(CAMERA, kind) for kind in PROJECTED]
    stage = stage_for(redis_client, names, db_engine)
    await project_all(redis_client, stage, streams)
    high = "SELECT count(*) FROM events WHERE risk_level = 'high'"
    assert await scalar(db_engine, high) == 0
    assert await scalar(db_engine, "SELECT analyzed FROM reanalysis_runs") == 6
    assert await scalar(db_engine, "SELECT count(*) FROM reanalysis_results") == 6

    written = await adopt(redis_client, names, [CAMERA], run_id)
    assert written == {CAMERA: 6}
    assert await adopt(redis_client, names, [CAMERA], run_id) == {CAMERA: 0}  # once
    rows: Any = await redis_client.xrange(names.analyses(CAMERA))
    adopted = [read_fields(f)[0] for _, f in rows][6:]
    assert all(isinstance(a, AnalysisCompleted) and a.run_id == run_id for a in adopted)
    assert all(not a.alert and a.supersedes for a in adopted)  # type: ignore[union-attr]

    await project_all(redis_client, stage, streams)
    assert await scalar(db_engine, high) == 3
    assert await scalar(db_engine, "SELECT adopted FROM reanalysis_runs") == 6
    history = "SELECT count(*) FROM analysis_history WHERE supersedes IS NOT NULL"
    assert await scalar(db_engine, history) == 6
    assert (await verify(db_engine, redis_client, names)).equal


async def test_a_result_is_a_fact_with_the_current_judgement(
    redis_client: Redis, key_prefix: str
) -> None:
    """Each result names the analysis it was compared with, so adoption can tell a batch judged
    again since the run from one whose judgement is still the one compared."""
    names = StreamNames(key_prefix)
    await _seed(redis_client, names, 2)
    run_id = await stricter_run(redis_client, names)
    rows: Any = await redis_client.xrange(names.analyses(CAMERA))
    current = {read_fields(f)[0].batch_id: i.decode() for i, f in rows}  # type: ignore[union-attr]
    for result in (await run_state(redis_client, names, CAMERA, run_id)).results:
        assert isinstance(result, ReanalysisResult)
        assert result.current_entry_id == current[result.batch_id]
    assert PERSON.base == 28  # the default weights are untouched by a candidate's


async def test_the_command_runs_reports_and_adopts(
    redis_client: Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """`hsi reanalyze --since … --analyzer rules --config stricter.toml` prints the transition
    matrix and the cost; `show`, `list` and `adopt` follow the run by its id."""
    from click.testing import CliRunner

    from hsi.cli import main
    from hsi.settings.model import get_settings

    names = StreamNames(key_prefix)
    await _seed(redis_client, names, 4)
    config = tmp_path / "stricter.toml"
    config.write_text("[weights.person]\nbase = 70\n", encoding="utf-8")
    env = {"REDIS_URL": redis_url, "STREAM_PREFIX": key_prefix, "DATA_DIR": str(tmp_path)}
    runner = CliRunner()

    def hsi(*args: str) -> str:
        get_settings.cache_clear()
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    since = (NOON - timedelta(days=1)).isoformat()
    printed = await asyncio.to_thread(
        hsi, "reanalyze", "--since", since, "--analyzer", "rules", "--config", str(config)
    )
    run_id = printed.split("run ", 1)[1].split(":", 1)[0]
    assert "completed" in printed
    assert "would now alert: 2" in printed
    assert "cost: 4 calls" in printed
    assert run_id in await asyncio.to_thread(hsi, "reanalyze", "list")
    assert "would change" in await asyncio.to_thread(hsi, "reanalyze", "show", run_id)
    adopted = await asyncio.to_thread(hsi, "reanalyze", "adopt", run_id)
    assert "adopted run" in adopted
    assert "4 analyses" in adopted
    get_settings.cache_clear()

"""A re-analysis run on the streams: start, work (and resume), cancel, read, adopt.

A run is a consumer of the cameras' batches streams with a group of its own,
`reanalyze-<run id>`, created at the start of each stream. `start_run` records on each camera's
reanalyses stream a `reanalysis.started` fact naming the last batch entry at that moment: the
run covers the batches up to it. `RunWorker` reads the run's group (its own pending entries
first, so a run killed mid-way resumes where it stood), judges the selected batches with the
candidate analyzer, and writes each `reanalysis.result` (or `reanalysis.failed`) and the XACK of
its batch in one transaction: every batch is judged once per run, whatever stops it. A batch
outside the selection is acknowledged without a call. When the group has passed the last batch,
the run writes `reanalysis.ended` and removes its group.

The run never writes an analysis and never alerts. `adopt` does, once per camera: for each
judged batch whose current analysis is still the one the run compared with, a new
`analysis.completed` naming the analysis it supersedes and the run, with `alert` off unless
asked, and a `reanalysis.adopted` fact, in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from streams.analyzers import Analyzer, AnalyzerError
from streams.clock import utc_now
from streams.envelope import entry_fields, read_fields
from streams.groups import is_existing_group_error, is_missing_group_error
from streams.logs import log_event
from streams.names import StreamNames
from streams.reanalysis.report import Compared, compared
from streams.reanalysis.selection import Selection
from streams.replies import id_key, reply_text
from streams.schemas import (
    JUDGEMENT_FIELDS,
    AnalysisCompleted,
    AnalysisFailed,
    BatchClosed,
    EntryError,
    ReanalysisAdopted,
    ReanalysisEnded,
    ReanalysisFailed,
    ReanalysisResult,
    ReanalysisStarted,
)
from streams.stages.analyze import judgement_of, summarize
from streams.transactions import transaction

logger = logging.getLogger("hsi.reanalyze")

RedisClient = Redis | RedisCluster
READ_COUNT = 32  # batch entries read from the run's group at a time
CONSUMER = "run"  # one consumer name per run: a resumed run gets its own pending entries back


def group_name(run_id: str) -> str:
    return f"reanalyze-{run_id}"


def new_run_id(now: datetime) -> str:
    """A run id that sorts by its start and reads as one: `20261207T201500-3fa9c2`."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}"


def config_hash(description: str) -> str:
    return hashlib.sha256(description.encode()).hexdigest()


class RunError(ValueError):
    """A run cannot be started, resumed or adopted; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """The analyzer a run judges with, as the run records it."""

    analyzer: Analyzer
    name: str  # "rules" or "llm"
    model: str | None
    description: str  # canonical text of its configuration (hashed into `config_hash`)


@dataclass(frozen=True)
class Current:
    """A batch's current judgement: the last analysis on the camera's analyses stream."""

    entry_id: str
    score: int | None
    level: str | None
    analysis: AnalysisCompleted | None


async def stream_entries(redis: RedisClient, stream: str) -> list[tuple[str, Any]]:
    """Every readable entry of a stream, oldest first (unreadable ones skipped)."""
    found: list[tuple[str, Any]] = []
    start = "-"
    while True:
        rows: Any = await redis.xrange(stream, min=start, count=1000)
        for raw_id, fields in rows:
            entry_id = reply_text(raw_id)
            try:
                entry, _ = read_fields(fields)
            except EntryError:
                continue
            found.append((entry_id, entry))
        if len(rows) < 1000:
            return found
        start = "(" + reply_text(rows[-1][0])


async def current_analyses(
    redis: RedisClient, names: StreamNames, camera: str
) -> dict[str, Current]:
    """batch id → its current judgement (the last analysis entry of the batch)."""
    current: dict[str, Current] = {}
    for entry_id, entry in await stream_entries(redis, names.analyses(camera)):
        if isinstance(entry, AnalysisCompleted):
            current[entry.batch_id] = Current(entry_id, entry.risk_score, entry.risk_level, entry)
        elif isinstance(entry, AnalysisFailed):
            current[entry.batch_id] = Current(entry_id, None, None, None)
    return current


@dataclass
class RunState:
    """What a camera's reanalyses stream says of one run."""

    started: ReanalysisStarted | None = None
    ended: ReanalysisEnded | None = None
    adopted: ReanalysisAdopted | None = None
    results: list[ReanalysisResult | ReanalysisFailed] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(
            (r.prompt_tokens or 0) + (r.completion_tokens or 0)
            for r in self.results
            if isinstance(r, ReanalysisResult)
        )


async def run_state(redis: RedisClient, names: StreamNames, camera: str, run_id: str) -> RunState:
    state = RunState()
    for _, entry in await stream_entries(redis, names.reanalyses(camera)):
        if getattr(entry, "run_id", None) != run_id:
            continue
        if isinstance(entry, ReanalysisStarted):
            state.started = entry
        elif isinstance(entry, ReanalysisEnded):
            state.ended = entry
        elif isinstance(entry, ReanalysisAdopted):
            state.adopted = entry
        elif isinstance(entry, ReanalysisResult | ReanalysisFailed):
            state.results.append(entry)
    return state


async def run_cameras(
    redis: RedisClient, names: StreamNames, cameras: Iterable[str], run_id: str
) -> dict[str, RunState]:
    """The cameras a run was started on, with their state."""
    states = {}
    for camera in sorted(cameras):
        state = await run_state(redis, names, camera, run_id)
        if state.started is not None:
            states[camera] = state
    return states


async def start_run(
    redis: RedisClient,
    names: StreamNames,
    cameras: Iterable[str],
    candidate: Candidate,
    selection: Selection,
    *,
    max_tokens: int | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> str:
    """Record a new run on each camera (with its group) and return its id."""
    chosen = [c for c in sorted(cameras) if not selection.cameras or c in selection.cameras]
    if not chosen:
        raise RunError("no camera matches the selection")
    now = clock()
    run_id = new_run_id(now)
    for camera in chosen:
        last: Any = await redis.xrevrange(names.batches(camera), count=1)
        until = reply_text(last[0][0]) if last else "0-0"
        try:
            await redis.xgroup_create(
                names.batches(camera), group_name(run_id), id="0", mkstream=True
            )
        except ResponseError as exc:
            if not is_existing_group_error(exc):
                raise
        started = ReanalysisStarted(
            camera_id=camera,
            run_id=run_id,
            analyzer=candidate.name,
            model=candidate.model,
            config_hash=config_hash(candidate.description),
            selection=selection.describe(),
            since=selection.since,
            until=selection.until,
            levels=tuple(sorted(selection.levels)),
            event_ids=tuple(sorted(selection.event_ids)),
            until_entry_id=until,
            max_tokens=max_tokens,
            started_at=now,
        )
        await redis.xadd(names.reanalyses(camera), entry_fields(started))  # type: ignore[arg-type]
    log_event(logger, "reanalyze.started", run=run_id, cameras=len(chosen), analyzer=candidate.name)
    return run_id


def cancel_key(names: StreamNames, run_id: str) -> str:
    return f"{names.prefix}:reanalyze-cancel:{run_id}"


async def cancel_run(
    redis: RedisClient, names: StreamNames, cameras: Iterable[str], run_id: str
) -> int:
    """Stop a run: a worker stops at its next read; cameras not ended get `reanalysis.ended`
    (cancelled). Returns the cameras cancelled."""
    await redis.set(cancel_key(names, run_id), "1", ex=7 * 86_400)
    cancelled = 0
    for camera, state in (await run_cameras(redis, names, cameras, run_id)).items():
        if state.ended is None:
            await _end(redis, names, camera, run_id, "cancelled")
            cancelled += 1
    return cancelled


async def _end(
    redis: RedisClient,
    names: StreamNames,
    camera: str,
    run_id: str,
    reason: Literal["completed", "cancelled", "budget"],
) -> None:
    ended = ReanalysisEnded(camera_id=camera, run_id=run_id, reason=reason, ended_at=utc_now())
    await redis.xadd(names.reanalyses(camera), entry_fields(ended))  # type: ignore[arg-type]
    try:
        await redis.xgroup_destroy(names.batches(camera), group_name(run_id))
    except ResponseError as exc:
        if not is_missing_group_error(exc) and "no such key" not in str(exc).lower():
            raise


@dataclass
class Progress:
    """Counts of a run in this process, for a progress line (rate and ETA)."""

    total: int = 0  # batch entries the run covers
    seen: int = 0  # of them, read (judged, failed or outside the selection)
    judged: int = 0
    failed: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.seen / elapsed
        left = max(self.total - self.seen, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (
            f"{self.seen}/{self.total} batches, {self.judged} judged, {self.failed} failed, "
            f"{self.tokens} tokens, {rate:.1f}/s, ETA {eta}"
        )


class RunWorker:
    """Works a run to its end on every camera it was started on (or resumes it)."""

    def __init__(
        self,
        redis: RedisClient,
        names: StreamNames,
        candidate: Candidate,
        run_id: str,
        *,
        timezone: str | tzinfo = "UTC",
        concurrency: int = 2,
        clock: Callable[[], datetime] = utc_now,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        self._candidate = candidate
        self.run_id = run_id
        self._timezone = timezone
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._clock = clock
        self._on_progress = on_progress
        self.progress = Progress()
        self.ended: dict[str, str] = {}  # camera → end reason

    async def run(self, cameras: Iterable[str]) -> dict[str, str]:
        states = await run_cameras(self._redis, self._names, cameras, self.run_id)
        if not states:
            raise RunError(f"no run {self.run_id!r} on any camera")
        open_states = {c: s for c, s in states.items() if s.ended is None}
        for camera, state in states.items():
            if state.ended is not None:
                self.ended[camera] = state.ended.reason
        for camera, state in open_states.items():
            self.progress.total += await self._covered(camera, state)
        self.progress.tokens = sum(s.tokens for s in states.values())
        for camera, state in open_states.items():
            self.ended[camera] = await self._camera(camera, state)
        return self.ended

    async def _covered(self, camera: str, state: RunState) -> int:
        assert state.started is not None
        until = state.started.until_entry_id
        if until == "0-0":
            return 0
        # the entries up to the run's end, without reading them all: the stream's length less
        # the few that came after the run began
        stream = self._names.batches(camera)
        later: Any = await self._redis.xrange(stream, min=f"({until}")
        return int(await self._redis.xlen(stream)) - len(later)

    async def _cancelled(self) -> bool:
        return bool(await self._redis.exists(cancel_key(self._names, self.run_id)))

    async def _camera(
        self, camera: str, state: RunState
    ) -> Literal["completed", "cancelled", "budget"]:
        assert state.started is not None
        until = id_key(state.started.until_entry_id)
        selection = Selection.of_run(state.started)
        budget = state.started.max_tokens
        current = await current_analyses(self._redis, self._names, camera)
        stream = self._names.batches(camera)
        group = group_name(self.run_id)
        position = "0"  # this consumer's pending entries first: a resumed run takes them back
        while True:
            if await self._cancelled():
                return "cancelled"  # `cancel_run` wrote the fact
            if budget is not None and self.progress.tokens >= budget:
                await _end(self._redis, self._names, camera, self.run_id, "budget")
                return "budget"
            try:
                reply: Any = await self._redis.xreadgroup(
                    group, CONSUMER, {stream: position}, count=READ_COUNT
                )
            except ResponseError as exc:
                if is_missing_group_error(exc):  # ended by another worker meanwhile
                    return "completed"
                raise
            rows = reply[0][1] if reply else []
            if position == "0" and not rows:
                position = ">"
                continue
            inside = [(reply_text(i), f) for i, f in rows if id_key(reply_text(i)) <= until]
            if inside:
                await self._judge(camera, stream, group, inside, current, selection, budget)
            if not rows or len(inside) < len(rows):
                await _end(self._redis, self._names, camera, self.run_id, "completed")
                return "completed"

    async def _judge(
        self,
        camera: str,
        stream: str,
        group: str,
        rows: list[tuple[str, Any]],
        current: dict[str, Current],
        selection: Selection,
        budget: int | None,
    ) -> None:
        skipped: list[str] = []
        work = []
        for entry_id, fields in rows:
            try:
                batch, _ = read_fields(fields)
            except EntryError:
                batch = None
            now = current.get(batch.batch_id) if isinstance(batch, BatchClosed) else None
            level = now.level if now is not None else None
            if not isinstance(batch, BatchClosed) or not selection.matches(camera, batch, level):
                skipped.append(entry_id)
                continue
            work.append(self._one(camera, stream, group, entry_id, batch, now, budget))
        if skipped:
            await self._redis.xack(stream, group, *skipped)
            self.progress.seen += len(skipped)
            self._report()
        await asyncio.gather(*work)

    async def _one(
        self,
        camera: str,
        stream: str,
        group: str,
        entry_id: str,
        batch: BatchClosed,
        now: Current | None,
        budget: int | None,
    ) -> None:
        async with self._slots:
            if budget is not None and self.progress.tokens >= budget:
                return  # left unacknowledged: the run ends over budget at its next read
            fact = await self._fact(camera, entry_id, batch, now)
            if isinstance(fact, ReanalysisResult):  # counted before the next call may start
                self.progress.tokens += (fact.prompt_tokens or 0) + (fact.completion_tokens or 0)
        async with transaction(self._redis) as pipe:
            pipe.xadd(self._names.reanalyses(camera), entry_fields(fact))  # type: ignore[arg-type]
            pipe.xack(stream, group, entry_id)
            await pipe.execute()
        self.progress.seen += 1
        if isinstance(fact, ReanalysisResult):
            self.progress.judged += 1
        else:
            self.progress.failed += 1
        self._report()

    async def _fact(
        self, camera: str, entry_id: str, batch: BatchClosed, now: Current | None
    ) -> ReanalysisResult | ReanalysisFailed:
        try:
            analysis = await self._candidate.analyzer.analyze(summarize(batch, self._timezone))
        except AnalyzerError as exc:
            return ReanalysisFailed(
                camera_id=camera,
                run_id=self.run_id,
                batch_id=batch.batch_id,
                batch_entry_id=entry_id,
                current_entry_id=now.entry_id if now else None,
                error=f"{type(exc).__name__}: {exc}"[:500],
                failed_at=self._clock(),
            )
        return ReanalysisResult(
            camera_id=camera,
            run_id=self.run_id,
            batch_id=batch.batch_id,
            batch_entry_id=entry_id,
            current_entry_id=now.entry_id if now else None,
            current_score=now.score if now else None,
            current_level=now.level if now else None,
            **judgement_of(analysis),
            analyzed_at=self._clock(),
        )

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress)


async def run_results(
    redis: RedisClient, names: StreamNames, cameras: Iterable[str], run_id: str
) -> list[Compared]:
    """Every batch the run judged or failed on, for `streams.reanalysis.report.build_report`."""
    states = await run_cameras(redis, names, cameras, run_id)
    return [compared(result) for state in states.values() for result in state.results]


async def adopt(
    redis: RedisClient,
    names: StreamNames,
    cameras: Iterable[str],
    run_id: str,
    *,
    alerts: bool = False,
    clock: Callable[[], datetime] = utc_now,
) -> dict[str, int]:
    """Make the run's judgements the current analyses; camera → analyses written (0 for a
    camera adopted before). A batch judged again since the run (its current analysis is not the
    one the run compared with) keeps its newer judgement."""
    states = await run_cameras(redis, names, cameras, run_id)
    if not states:
        raise RunError(f"no run {run_id!r} on any camera")
    unfinished = sorted(c for c, s in states.items() if s.ended is None)
    if unfinished:
        raise RunError(
            f"run {run_id} is still going on {', '.join(unfinished)}; let it finish "
            "(`hsi reanalyze resume`) or cancel it before adopting"
        )
    written: dict[str, int] = {}
    for camera, state in states.items():
        if state.adopted is not None:
            written[camera] = 0
            continue
        current = await current_analyses(redis, names, camera)
        last: dict[str, ReanalysisResult] = {}
        for result in state.results:
            if isinstance(result, ReanalysisResult):
                last[result.batch_id] = result
        analyses = []
        now = clock()
        for batch_id, result in last.items():
            present = current.get(batch_id)
            if (present.entry_id if present else None) != result.current_entry_id:
                continue
            analyses.append(
                AnalysisCompleted(
                    camera_id=camera,
                    batch_id=batch_id,
                    batch_entry_id=result.batch_entry_id,
                    **result.model_dump(include=set(JUDGEMENT_FIELDS)),
                    analyzed_at=now,
                    supersedes=result.current_entry_id,
                    run_id=run_id,
                    alert=alerts,
                )
            )
        marker = ReanalysisAdopted(
            camera_id=camera, run_id=run_id, analyses=len(analyses), alerts=alerts, adopted_at=now
        )
        async with transaction(redis) as pipe:
            await pipe.watch(names.reanalyses(camera))
            if (await run_state(redis, names, camera, run_id)).adopted is not None:
                written[camera] = 0  # another adopt got here first
                continue
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            for analysis in analyses:
                pipe.xadd(names.analyses(camera), entry_fields(analysis))  # type: ignore[arg-type]
            pipe.xadd(names.reanalyses(camera), entry_fields(marker))  # type: ignore[arg-type]
            await pipe.execute()
        written[camera] = len(analyses)
    log_event(logger, "reanalyze.adopted", run=run_id, analyses=sum(written.values()))
    return written

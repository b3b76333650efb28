"""The projector: stream entries → PostgreSQL rows, many entries per transaction, each once.

One transaction per batch of one stream:

1. insert the tracking rows `projection_checkpoints(projection, stream, entry_id)` with
   `ON CONFLICT DO NOTHING RETURNING entry_id`: only the entries whose tracking row is new are
   applied, so a redelivered or replayed entry changes nothing, and of two projectors handed the
   same entry at once the second waits for the first's commit and then skips it;
2. apply the row upserts of those entries (`projections.rows`), combined into one multi-row
   statement per table and column set (`projections.upserts`).

Entries that cannot be read or mapped (poison) are reported in `HandlerResult.failed`: not applied,
not tracked, not acknowledged, so the reclaimer buries them in the dead stream while the rest of
the batch is applied. When PostgreSQL refuses the batch for something in the data (a value out of
range), the entries are applied one by one and only the refused ones fail. Deadlocks and
serialization failures are retried.

`ProjectStage` is the batch handler of group `project`: it projects, commits, and only then XACKs
the applied and the already-applied entries. It also makes the `project` span of each entry (in
the entry's trace: a file's, or an event's for batches and analyses) and records the stage
metrics and, for each analysis applied, the end-to-end latency from the earliest `observed_at` of
the event's files (the entry's `observed_at` header) to now. A replay uses `Projector` directly:
no spans, no latency samples.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis, RedisCluster
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.errors import ProjectionError, UnexpectedEntryError
from projections.logs import log_event
from projections.rows import CAMERAS_SOURCE, RowOp, rows_for
from projections.upserts import Signature, Statement, checkpoint_sql, plan, rows_json, upsert_sql
from streams.envelope import DATA_FIELD, HEADER_TYPE, decode, read_fields
from streams.names import PROJECTED, SHARED, Group, StreamNames
from streams.reclaim import HandlerResult, StreamEntry
from streams.schemas import AnalysisCompleted, AnalysisFailed, EntryError
from streams.tracing import OK, SKIPPED, StageSpans, StageTelemetry, observed_at, resolve

logger = logging.getLogger("hsi.project")

DEFAULT_PROJECTION = "main"

# Retried: a deadlock or a serialization failure says nothing about the entries.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
# Data exceptions and integrity violations: something in the entries themselves.
_ENTRY_SQLSTATE_CLASSES = ("22", "23")


@dataclass(frozen=True)
class ProjectionResult(HandlerResult):
    """A `HandlerResult` that also names the entries applied now and those applied before."""

    applied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # already tracked: a redelivery, or applied by another projector


@dataclass
class _Batch:
    entries: list[tuple[str, list[RowOp]]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


def _entry_caused(exc: DBAPIError) -> bool:
    return _sqlstate(exc).startswith(_ENTRY_SQLSTATE_CLASSES)


def _db_message(exc: DBAPIError) -> str:
    return str(exc.orig).strip() if exc.orig is not None else str(exc)


def _id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


# The statements as SQLAlchemy clauses, made once: `text()` parses its bind parameters each time.
@functools.lru_cache(maxsize=256)
def _upsert_text(table: str, signature: Signature, schema: str | None) -> TextClause:
    columns = tuple(c for c, _ in signature)
    merges = tuple(m for _, m in signature)
    return text(upsert_sql(Statement(table, columns, merges, ()), schema))


@functools.lru_cache(maxsize=64)
def _checkpoint_text(schema: str | None) -> TextClause:
    return text(checkpoint_sql(schema))


class Projector:
    """Applies the entries of projected streams to the tables found on `engine`'s search path
    (or in `schema`), recording them under the projection name `projection`."""

    def __init__(
        self,
        engine: AsyncEngine,
        names: StreamNames,
        projection: str = DEFAULT_PROJECTION,
        *,
        schema: str | None = None,
        attempts: int = 5,
        retry_delay_seconds: float = 0.05,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self._engine = engine
        self._names = names
        self.projection = projection
        self.schema = schema
        self._attempts = attempts
        self._retry_delay = retry_delay_seconds

    # --- reading --------------------------------------------------------------------------------

    def source(self, stream: str) -> tuple[str, str | None]:
        """(stream kind, camera) of a projected stream; the shared cameras stream has no camera."""
        if stream == self._names.cameras:
            return CAMERAS_SOURCE, None
        try:
            camera, kind = self._names.parse(stream)
        except ValueError as exc:
            raise ProjectionError(
                f"{stream!r} is neither the cameras stream nor a camera stream of prefix "
                f"{self._names.prefix!r}; subscribe the projector to the streams of its prefix"
            ) from exc
        if kind not in PROJECTED:
            raise ProjectionError(
                f"{stream} is a {kind.value} stream, which is not projected; the projected "
                f"kinds are {', '.join(k.value for k in PROJECTED)}"
            )
        return kind.value, camera

    def _prepare(self, stream: str, entries: Sequence[StreamEntry]) -> _Batch:
        kind, stream_camera = self.source(stream)
        batch = _Batch()
        seen: set[str] = set()
        for entry_id, fields in entries:
            if entry_id in seen:
                continue
            seen.add(entry_id)
            try:
                entry, _ = read_fields(fields)
                camera = stream_camera or entry.camera_id
                ops = rows_for(kind, camera, entry_id, entry)
            except (EntryError, UnexpectedEntryError) as exc:
                batch.failed[entry_id] = f"unprojectable entry: {exc}"
                continue
            except Exception as exc:  # FastStream's parser raises various errors on foreign bytes
                batch.failed[entry_id] = f"unreadable entry: {type(exc).__name__}: {exc}"
                continue
            batch.entries.append((entry_id, ops))
        return batch

    # --- writing --------------------------------------------------------------------------------

    async def _write(
        self, conn: AsyncConnection, stream: str, entries: list[tuple[str, list[RowOp]]]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Track and apply in the caller's transaction; (applied, skipped) entry ids."""
        ids = [entry_id for entry_id, _ in entries]
        if not ids:
            return (), ()
        tracked = await conn.execute(
            _checkpoint_text(self.schema),
            {
                "projection": self.projection,
                "stream": stream,
                "ids": sorted(ids, key=_id_key),  # one lock order for concurrent projectors
            },
        )
        new = {str(row[0]) for row in tracked}
        for statement in plan(op for entry_id, ops in entries if entry_id in new for op in ops):
            await conn.execute(
                _upsert_text(statement.table, statement.signature, self.schema),
                {"rows": rows_json(statement)},
            )
        applied = tuple(entry_id for entry_id in ids if entry_id in new)
        skipped = tuple(entry_id for entry_id in ids if entry_id not in new)
        return applied, skipped

    async def _transaction(
        self, stream: str, entries: list[tuple[str, list[RowOp]]]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._engine.begin() as conn:
                    return await self._write(conn, stream, entries)
            except DBAPIError as exc:
                if _sqlstate(exc) not in _TRANSIENT_SQLSTATES or attempt >= self._attempts:
                    raise
                log_event(
                    logger,
                    logging.INFO,
                    "project.retry",
                    stream=stream,
                    attempt=attempt,
                    error=_db_message(exc),
                )
                await asyncio.sleep(self._retry_delay * attempt)

    async def apply_on(
        self, conn: AsyncConnection, stream: str, entries: Sequence[StreamEntry]
    ) -> ProjectionResult:
        """Project inside the caller's transaction (a replay's swap); database errors propagate."""
        batch = self._prepare(stream, entries)
        applied, skipped = await self._write(conn, stream, batch.entries)
        return ProjectionResult(failed=batch.failed, applied=applied, skipped=skipped)

    async def apply(self, stream: str, entries: Sequence[StreamEntry]) -> ProjectionResult:
        """Project the entries of one stream in one transaction (committed when this returns).

        Unreadable entries are reported failed and the others applied; a database outage raises
        `ProjectionError` and nothing is applied.
        """
        batch = self._prepare(stream, entries)
        failed = dict(batch.failed)
        if not batch.entries:
            return ProjectionResult(failed=failed)
        try:
            applied, skipped = await self._transaction(stream, batch.entries)
        except DBAPIError as exc:
            if not _entry_caused(exc):
                raise ProjectionError(
                    f"PostgreSQL failed while projecting {len(batch.entries)} entries of "
                    f"{stream}: {_db_message(exc)}. Nothing was applied; the entries stay "
                    "pending and are retried. Check that the database is up and migrated "
                    "(`hsi migrate`)."
                ) from exc
            applied, skipped = await self._isolate(stream, batch.entries, failed, exc)
        return ProjectionResult(failed=failed, applied=applied, skipped=skipped)

    async def _isolate(
        self,
        stream: str,
        entries: list[tuple[str, list[RowOp]]],
        failed: dict[str, str],
        cause: DBAPIError,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Apply one entry per transaction, so that only the entries PostgreSQL refuses fail."""
        if len(entries) == 1:
            failed[entries[0][0]] = f"refused by PostgreSQL: {_db_message(cause)}"
            return (), ()
        log_event(
            logger,
            logging.WARNING,
            "project.isolating",
            stream=stream,
            entries=len(entries),
            error=_db_message(cause),
        )
        applied: list[str] = []
        skipped: list[str] = []
        for entry in entries:
            try:
                one_applied, one_skipped = await self._transaction(stream, [entry])
            except DBAPIError as exc:
                if not _entry_caused(exc):
                    raise ProjectionError(
                        f"PostgreSQL failed while projecting entry {entry[0]} of {stream}: "
                        f"{_db_message(exc)}; the entry stays pending and is retried"
                    ) from exc
                failed[entry[0]] = f"refused by PostgreSQL: {_db_message(exc)}"
                continue
            applied.extend(one_applied)
            skipped.extend(one_skipped)
        return tuple(applied), tuple(skipped)


class ProjectStage:
    """The batch handler of group `project`: project, commit, then XACK."""

    group = Group.PROJECT

    def __init__(
        self,
        redis: Redis | RedisCluster,
        names: StreamNames,
        projector: Projector,
        *,
        telemetry: StageTelemetry | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        self._projector = projector
        self._telemetry = telemetry

    async def handle(self, stream: str, entries: list[StreamEntry]) -> ProjectionResult:
        """Apply the entries (one transaction) and acknowledge every entry that is now in the
        projection, applied now or before; failed entries stay pending for the reclaimer."""
        telemetry = resolve(self._telemetry)
        _, camera = self._projector.source(stream)
        headers = {entry_id: _headers(fields) for entry_id, fields in entries}
        with StageSpans(telemetry, self.group.value, stream, camera or SHARED) as spans:
            for entry_id, _ in entries:
                spans.start(entry_id, headers[entry_id])
            result = await self._projector.apply(stream, entries)
            done = [entry_id for entry_id, _ in entries if entry_id not in result.failed]
            if done:
                await self._redis.xack(stream, self.group.value, *done)
            for entry_id in result.applied:
                spans.outcome(entry_id, OK, "applied")
            for entry_id in result.skipped:
                spans.outcome(entry_id, SKIPPED, "already_applied")
            spans.failed(result.failed)
        now = datetime.now(UTC)
        for entry_id in result.applied:
            self._end_to_end(telemetry, camera, headers[entry_id], now)
        if result.applied or result.failed:
            log_event(
                logger,
                logging.DEBUG,
                "project.batch",
                stream=stream,
                applied=len(result.applied),
                skipped=len(result.skipped),
                failed=len(result.failed),
            )
        return result

    @staticmethod
    def _end_to_end(
        telemetry: StageTelemetry, camera: str | None, headers: dict[str, Any], now: datetime
    ) -> None:
        """An event is stored once its analysis is: record observed → projected."""
        if camera is None or headers.get(HEADER_TYPE) not in _ANALYSIS_TYPES:
            return
        first = observed_at(headers)
        if first is not None:
            seconds = max(0.0, (now - first).total_seconds())
            telemetry.instruments.end_to_end_latency.record(seconds, {"camera": camera})


_ANALYSIS_TYPES = frozenset(
    model.model_fields["type"].default for model in (AnalysisCompleted, AnalysisFailed)
)


def _headers(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """An entry's headers without parsing its body; empty when unreadable."""
    data = fields.get(DATA_FIELD)
    if data is None:
        return {}
    try:
        return decode(data)[1]
    except Exception:  # foreign bytes: the projector reports the entry failed
        return {}

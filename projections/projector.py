"""The projector: stream entries → PostgreSQL rows, many entries per transaction, each once.

One transaction per batch of one stream:

1. insert the tracking rows `projection_checkpoints(projection, stream, entry_id)` with
   `ON CONFLICT DO NOTHING RETURNING entry_id`: only the entries whose tracking row is new are
   applied, so a redelivered or replayed entry changes nothing, and of two projectors handed the
   same entry at once the second waits for the first's commit and then skips it;
2. apply the row upserts of those entries (`projections.rows`), combined into one multi-row
   statement per table and column set (`projections.upserts`).

The statements are rendered before the transaction from all the entries of the batch
(`prepare`, pure), and used when step 1 finds every entry new (the usual case); otherwise they
are rendered again from the new entries only.

Entries that cannot be read or mapped (poison) are reported in `HandlerResult.failed`: not applied,
not tracked, not acknowledged, so the reclaimer buries them in the dead stream while the rest of
the batch is applied. When PostgreSQL refuses the batch for something in the data (a value out of
range), the entries are applied one by one and only the refused ones fail. Deadlocks and
serialization failures are retried.

`ProjectStage` is the batch handler of group `project`: it projects, commits, and only then XACKs
the applied and the already-applied entries. It also makes the `project` span of each entry (in
the entry's trace: a file's, or an event's for batches and analyses) and records the stage
metrics and, for each analysis applied, the end-to-end latency from the earliest `observed_at` of
the event's files (the entry's `observed_at` header) to now; it decodes each envelope once, for
the span and the projector. A replay uses `Projector` directly: no spans, no latency samples; its
bulk load (`projections.bulk`) uses only the projector's mapping (`map_entries`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.driver import on_driver
from projections.errors import ProjectionError, UnexpectedEntryError
from projections.rows import CAMERAS_SOURCE, RowOp, rows_for
from projections.upserts import Signature, Statement, checkpoint_sql, plan, rows_json, upsert_sql
from streams import trusted
from streams.clock import utc_now
from streams.contract import HandlerResult, StreamEntry
from streams.envelope import DATA_FIELD, HEADER_TYPE, decode, read_fields
from streams.groups import POSITION_LUA, position_of
from streams.logs import log_event
from streams.names import PROJECTED, SHARED, Group, StreamNames
from streams.replies import id_key
from streams.schemas import AnalysisCompleted, AnalysisFailed, Entry, EntryError, load_entry
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


# An upsert statement ready to run: (table, signature, its `:rows` parameter).
_Rendered = tuple[str, Signature, str]


@dataclass
class PreparedBatch:
    """The entries of one stream mapped to their row upserts (`Projector.prepare`), and those
    that could not be read or mapped, with the reason."""

    entries: list[tuple[str, list[RowOp]]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # The statements of all `entries`, rendered ahead: used when none was applied before.
    statements: list[_Rendered] | None = None


def _render(entries: Sequence[tuple[str, list[RowOp]]], new: set[str] | None) -> list[_Rendered]:
    """The upsert statements of the entries (of those in `new` when given), with their rows."""
    ops = (op for entry_id, ops in entries if new is None or entry_id in new for op in ops)
    return [(s.table, s.signature, rows_json(s)) for s in plan(ops)]


def _render_ahead(batch: PreparedBatch) -> None:
    try:
        batch.statements = _render(batch.entries, None)
    except Exception:  # a value JSON cannot carry: the write renders again and raises there
        batch.statements = None


# An envelope already read by the caller: (body, headers).
Envelope = tuple[bytes, dict[str, Any]]


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


def _entry_caused(exc: DBAPIError) -> bool:
    return _sqlstate(exc).startswith(_ENTRY_SQLSTATE_CLASSES)


def _db_message(exc: DBAPIError) -> str:
    return str(exc.orig).strip() if exc.orig is not None else str(exc)


# The statements, made once per shape and schema.
@functools.lru_cache(maxsize=256)
def _upsert_sql(table: str, signature: Signature, schema: str | None) -> str:
    """`upsert_sql` with psycopg's parameters (run on the driver or by `exec_driver_sql`)."""
    columns = tuple(c for c, _ in signature)
    merges = tuple(m for _, m in signature)
    return _driver_params(upsert_sql(Statement(table, columns, merges, ()), schema))


@functools.lru_cache(maxsize=64)
def _checkpoint_sql(schema: str | None) -> str:
    return _driver_params(checkpoint_sql(schema))


def _driver_params(sql: str) -> str:
    """The statement with psycopg's `%(name)s` for its `:name` parameters (the few it has)."""
    assert "%" not in sql, sql  # identifiers come from the table metadata: none has a `%`
    return re.sub(r"(?<![:\w]):(projection|stream|ids|rows)\b", r"%(\1)s", sql)


# (statement, parameters) → the rows it returned (none for a statement without a result).
Execute = Callable[[str, Mapping[str, Any]], Awaitable[Sequence[Sequence[Any]]]]


def _through(conn: AsyncConnection) -> Execute:
    """Statements through a SQLAlchemy connection (the caller's transaction)."""

    async def execute(sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        result = await conn.exec_driver_sql(sql, dict(params))
        return result.all() if result.returns_rows else ()

    return execute


def _on(driver: psycopg.AsyncConnection[Any]) -> Execute:
    """Statements on a psycopg connection (`projections.driver`)."""

    async def execute(sql: str, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        async with driver.cursor() as cursor:
            await cursor.execute(sql, params)
            return await cursor.fetchall() if cursor.description is not None else ()

    return execute


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
        concurrency: int | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self._engine = engine
        # Transactions at once: at most the pool's kept connections (`concurrency`, else the
        # engine pool's size). A projector subscribes to four streams per camera; more
        # transactions at once than the pool keeps made the pool open an overflow connection for
        # each and close it after (a new PostgreSQL session, SCRAM included, per transaction).
        size = getattr(engine.sync_engine.pool, "size", None)
        limit = concurrency or (size() if callable(size) else 0) or 10
        self._slots = asyncio.Semaphore(limit)
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

    def prepare(
        self,
        stream: str,
        entries: Sequence[StreamEntry],
        envelopes: Mapping[str, Envelope] | None = None,
        decoded: Mapping[str, Entry] | None = None,
    ) -> PreparedBatch:
        """Read and map the entries (pure: no I/O); `envelopes` gives the envelopes the caller
        has already decoded, `decoded` the entries it has already (`streams.trusted`), by entry
        id (the others are decoded here)."""
        batch = PreparedBatch()
        self._map(stream, entries, envelopes, batch, set(), decoded)
        _render_ahead(batch)
        return batch

    def map_entries(self, stream: str, entries: Sequence[StreamEntry]) -> PreparedBatch:
        """Read and map the entries (pure: no I/O) without rendering statements, for a caller
        that writes the rows its own way (a rebuild's bulk load, `projections.bulk`)."""
        batch = PreparedBatch()
        self._map(stream, entries, None, batch, set())
        return batch

    async def prepare_yielding(
        self, stream: str, entries: Sequence[StreamEntry], slice_size: int = 200
    ) -> PreparedBatch:
        """`prepare`, yielding to the event loop after every `slice_size` entries, so that a
        transaction in flight on the same loop goes on meanwhile."""
        batch = PreparedBatch()
        seen: set[str] = set()
        for start in range(0, len(entries), slice_size):
            self._map(stream, entries[start : start + slice_size], None, batch, seen)
            await asyncio.sleep(0)
        _render_ahead(batch)
        return batch

    def _map(
        self,
        stream: str,
        entries: Sequence[StreamEntry],
        envelopes: Mapping[str, Envelope] | None,
        batch: PreparedBatch,
        seen: set[str],
        decoded: Mapping[str, Entry] | None = None,
    ) -> None:
        kind, stream_camera = self.source(stream)
        for entry_id, fields in entries:
            if entry_id in seen:
                continue
            seen.add(entry_id)
            try:
                envelope = None if envelopes is None else envelopes.get(entry_id)
                known = None if decoded is None else decoded.get(entry_id)
                if known is not None:
                    entry = known
                elif envelope is None:
                    entry, _ = read_fields(fields)
                else:
                    entry = load_entry(envelope[0])
                camera = stream_camera or entry.camera_id
                ops = rows_for(kind, camera, entry_id, entry)
            except (EntryError, UnexpectedEntryError) as exc:
                batch.failed[entry_id] = f"unprojectable entry: {exc}"
                continue
            except Exception as exc:  # FastStream's parser raises various errors on foreign bytes
                batch.failed[entry_id] = f"unreadable entry: {type(exc).__name__}: {exc}"
                continue
            batch.entries.append((entry_id, ops))

    # --- writing --------------------------------------------------------------------------------

    async def _write(
        self,
        execute: Execute,
        stream: str,
        entries: list[tuple[str, list[RowOp]]],
        rendered: list[_Rendered] | None = None,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Track and apply in the caller's transaction; (applied, skipped) entry ids.

        `rendered` holds the statements of all `entries`, used when every entry is new."""
        ids = [entry_id for entry_id, _ in entries]
        if not ids:
            return (), ()
        tracked = await execute(
            _checkpoint_sql(self.schema),
            {
                "projection": self.projection,
                "stream": stream,
                "ids": sorted(ids, key=id_key),  # one lock order for concurrent projectors
            },
        )
        new = {str(row[0]) for row in tracked}
        if rendered is None or len(new) != len(ids):
            rendered = _render(entries, new)
        for table, signature, rows in rendered:
            await execute(_upsert_sql(table, signature, self.schema), {"rows": rows})
        applied = tuple(entry_id for entry_id in ids if entry_id in new)
        skipped = tuple(entry_id for entry_id in ids if entry_id not in new)
        return applied, skipped

    async def _transaction(
        self,
        stream: str,
        entries: list[tuple[str, list[RowOp]]],
        rendered: list[_Rendered] | None = None,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    return await on_driver(
                        self._engine,
                        lambda driver: self._write(_on(driver), stream, entries, rendered),
                        transaction=True,
                    )
            except DBAPIError as exc:
                if _sqlstate(exc) not in _TRANSIENT_SQLSTATES or attempt >= self._attempts:
                    raise
                log_event(
                    logger,
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
        batch = self.prepare(stream, entries)
        applied, skipped = await self._write(
            _through(conn), stream, batch.entries, batch.statements
        )
        return ProjectionResult(failed=batch.failed, applied=applied, skipped=skipped)

    async def apply(self, stream: str, entries: Sequence[StreamEntry]) -> ProjectionResult:
        """Project the entries of one stream in one transaction (committed when this returns).

        Unreadable entries are reported failed and the others applied; a database outage raises
        `ProjectionError` and nothing is applied.
        """
        return await self.apply_prepared(stream, self.prepare(stream, entries))

    async def apply_prepared(self, stream: str, batch: PreparedBatch) -> ProjectionResult:
        """`apply` of a batch `prepare` made from the entries of `stream`."""
        failed = dict(batch.failed)
        if not batch.entries:
            return ProjectionResult(failed=failed)
        try:
            applied, skipped = await self._transaction(stream, batch.entries, batch.statements)
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
            "project.isolating",
            level=logging.WARNING,
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
        envelopes: dict[str, Envelope] = {}
        decoded: dict[str, Entry] = {}
        headers: dict[str, dict[str, Any]] = {}
        for entry_id, fields in entries:
            known = trusted.recall(stream, entry_id)  # written by this process: no decoding
            if known is not None:
                decoded[entry_id], headers[entry_id] = known
                continue
            envelope = _envelope(fields)
            headers[entry_id] = {} if envelope is None else envelope[1]
            if envelope is not None:
                envelopes[entry_id] = envelope
        with StageSpans(telemetry, self.group.value, stream, camera or SHARED) as spans:
            for entry_id, _ in entries:
                spans.start(entry_id, headers[entry_id])
            batch = self._projector.prepare(stream, entries, envelopes, decoded)
            result = await self._projector.apply_prepared(stream, batch)
            done = [entry_id for entry_id, _ in entries if entry_id not in result.failed]
            if done:
                position = await _ACK_SCRIPT(
                    [stream], [self.group.value, *done], client=self._redis
                )
                result = dataclasses.replace(result, position=position_of(position))
            for entry_id in result.applied:
                spans.outcome(entry_id, OK, "applied")
            for entry_id in result.skipped:
                spans.outcome(entry_id, SKIPPED, "already_applied")
            spans.failed(result.failed)
        now = utc_now()
        for entry_id in result.applied:
            self._end_to_end(telemetry, camera, headers[entry_id], now)
        if result.applied or result.failed:
            log_event(
                logger,
                "project.batch",
                level=logging.DEBUG,
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


# XACK of the entries ARGV[2..] in group ARGV[1] of stream KEYS[1]; returns where the group then
# stands (`streams.groups.POSITION_LUA`), so the runner need not read it with a round trip.
_ACK = (
    POSITION_LUA
    + """
for i = 2, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
end
return position(KEYS[1], ARGV[1])
"""
)
_ACK_SCRIPT = AsyncScript(None, _ACK.encode())  # type: ignore[arg-type]  # bytes: no client needed

_ANALYSIS_TYPES = frozenset(
    model.model_fields["type"].default for model in (AnalysisCompleted, AnalysisFailed)
)


def _envelope(fields: dict[bytes, bytes]) -> Envelope | None:
    """An entry's body and headers, decoded once for the spans and the projector; None when
    unreadable (the projector then reports why)."""
    data = fields.get(DATA_FIELD)
    if data is None:
        return None
    try:
        return decode(data)
    except Exception:  # foreign bytes: the projector reports the entry failed
        return None

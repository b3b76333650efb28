"""Rebuilding the projection from the streams (`rebuild`) and checking it (`verify`).

A rebuild fills a shadow schema and swaps it in; the API keeps serving the live tables meanwhile:

1. create the shadow tables (`projections.shadow`);
2. snapshot: the last id and the length of every projected stream (the shared cameras stream and
   each camera's files, detections, batches, analyses and dead streams); cameras are those of the
   `camera-ids` set, of the live `cameras` table, of the cameras stream and any given;
3. bulk load (`projections.bulk`): read every stream from its start up to its snapshot id with
   XRANGE pages, camera after camera, map each entry with the projector's own mapping, merge the
   row upserts in memory into final rows (each upsert changes its row as its SQL would) and COPY
   them into the shadow tables with one tracking row per entry applied (projection `main`), all
   in one transaction. Then build the secondary indexes;
4. catch up: read what was appended since, stream by stream, until a round finds little, with a
   `Projector` writing to the shadow schema (same mapping, same tracking), one transaction per
   page, committed in stream order (the next page read and mapped while one is written);
5. swap, in one transaction: lock the live tables (ACCESS EXCLUSIVE, checkpoints first, as the
   projectors take them), apply the tail — every entry appended after the last catch-up — to the
   shadow tables, move the live tables out and the shadow tables in, commit; drop the old tables.

The bulk load applies each entry once without asking the tracking rows: the shadow tables are
empty when it starts (a fresh schema, dropped if the rebuild fails), it reads each stream once up
to its snapshot id, and it commits or leaves nothing. Its tracking rows are those the projector
would have written, so the catch-up and the tail, which go through the projector unchanged, skip
what it loaded and apply only what came after. A row it would write twice (a key that comes back
after its rows were written) or a value PostgreSQL refuses rolls it back; the load then runs
page by page through the projector instead (`ReplayReport.bulk` is False), which refuses only the
entries at fault, as the live projection does.

Entries arriving during the rebuild. The live projector keeps consuming into the live tables
until the swap. Once the swap holds its locks no projector transaction is in flight (each one
commits before the lock is granted, and the next one waits at its first statement), so every
entry the live projection has applied is already on its stream: the tail read inside the lock
covers them all, and the swapped-in tables hold every entry up to that tail. A projector
transaction that waited on the lock resolves the table names again when it gets it, and finds
the new tables: its entries that the tail already applied have tracking rows there and are
skipped (and acknowledged); later ones are applied. Entries the live group has not reached yet
were either applied by the rebuild (then skipped later) or are applied later. Nothing is lost,
nothing applied twice.

`verify` does steps 1–4 and then, in one transaction holding SHARE locks on the live tables
(readers go on, projectors wait), applies the tail and compares every table both ways with
`EXCEPT` (ignoring the time a checkpoint was written); the shadow schema is dropped afterwards.
Entries not yet projected live show up as rows only the rebuild has, so verify a caught-up
projection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import psycopg
from redis.asyncio import Redis, RedisCluster
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.bulk import BulkLoad, BulkRefusedError, paused_gc
from projections.errors import ReplayError
from projections.projector import DEFAULT_PROJECTION, ProjectionResult, Projector
from projections.shadow import (
    ShadowTables,
    TableDiff,
    compare,
    create_indexes,
    create_shadow,
    drop_schemas,
    live_schema,
    lock_live,
    maintenance_lock,
    scratch_schema,
    swap,
)
from projections.tables import cameras, qualified
from streams.contract import StreamEntry
from streams.logs import log_event
from streams.names import PROJECTED, StreamNames, is_camera_id
from streams.replies import reply_text

logger = logging.getLogger("hsi.replay")

# progress(done, total): entries read so far, and the entries to read (grows with appends).
Progress = Callable[[int, int], None]

_LOCK_NOT_AVAILABLE = "55P03"

T = TypeVar("T")


@dataclass(frozen=True)
class ReplayConfig:
    """How a rebuild reads and swaps.

    `page_size` entries per XRANGE page (and per transaction of the catch-up, and of a load page
    by page); catch-up rounds run until a round reads fewer than `catch_up_threshold` entries (at
    most `catch_up_rounds`); the swap waits `lock_timeout_ms` for its locks and is tried
    `swap_attempts` times. `bulk` False loads page by page through the projector, as the live
    projection applies entries (to compare the two).
    """

    page_size: int = 2000
    catch_up_rounds: int = 5
    catch_up_threshold: int = 1000
    lock_timeout_ms: int = 5000
    swap_attempts: int = 5
    sample_size: int = 5
    bulk: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 100_000:
            raise ValueError(f"page_size must be within 1..100000, got {self.page_size}")
        if self.swap_attempts < 1:
            raise ValueError(f"swap_attempts must be >= 1, got {self.swap_attempts}")
        if self.lock_timeout_ms < 1:
            raise ValueError(f"lock_timeout_ms must be >= 1, got {self.lock_timeout_ms}")


@dataclass(frozen=True)
class ReplayReport:
    """What a rebuild did."""

    schema: str  # the live schema
    cameras: tuple[str, ...]
    streams: int
    entries: int  # entries read from the streams
    applied: int
    failed: int  # unreadable entries, left out as the live projector leaves them out
    tail: int  # entries applied inside the swap (or the verification) transaction
    seconds: float
    swapped: bool
    # The initial load went by COPY (`projections.bulk`); False: PostgreSQL refused its rows and
    # the projector loaded the streams page by page.
    bulk: bool = False


@dataclass(frozen=True)
class VerifyReport:
    """A rebuild compared with the live projection, table by table."""

    replay: ReplayReport
    tables: tuple[TableDiff, ...]

    @property
    def equal(self) -> bool:
        return all(diff.equal for diff in self.tables)

    @property
    def differences(self) -> tuple[TableDiff, ...]:
        return tuple(diff for diff in self.tables if not diff.equal)


@dataclass
class _Run:
    """The state of one rebuild: stream positions and counters."""

    names: StreamNames
    projector: Projector
    config: ReplayConfig
    progress: Progress | None
    positions: dict[str, str | None] = field(default_factory=dict)  # last id applied, per stream
    cameras: set[str] = field(default_factory=set)
    total: int = 0
    read: int = 0
    applied: int = 0
    failed: int = 0
    bulk: bool = False

    def add_cameras(self, cameras: Iterable[str]) -> None:
        for camera in cameras:
            if is_camera_id(camera) and camera not in self.cameras:
                self.cameras.add(camera)
                for kind in PROJECTED:
                    self.positions.setdefault(self.names.stream(camera, kind), None)

    def count(self, entries: int, applied: int, failed: int) -> None:
        self.read += entries
        self.applied += applied
        self.failed += failed
        self.total = max(self.total, self.read)
        if self.progress is not None:
            self.progress(self.read, self.total)

    def restart(self) -> None:
        """Back to nothing read: every stream from its start, the counters at zero."""
        self.positions = dict.fromkeys(self.positions)
        self.total = self.read = self.applied = self.failed = 0

    def snapshot(self) -> dict[str, str | None]:
        return dict(self.positions)


async def _pages(
    redis: Redis | RedisCluster, stream: str, after: str | None, until: str, page_size: int
) -> AsyncIterator[list[StreamEntry]]:
    """XRANGE pages of `stream` from after `after` (or its start) up to `until` (inclusive)."""
    start = "-" if after is None else f"({after}"
    while True:
        rows: Any = await redis.xrange(stream, start, until, count=page_size)
        if not rows:
            return
        page: list[StreamEntry] = [(reply_text(entry_id), fields) for entry_id, fields in rows]
        yield page
        if len(rows) < page_size:
            return
        start = f"({page[-1][0]}"


async def _empty() -> AsyncIterator[list[StreamEntry]]:
    return
    yield


async def _ahead(pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """The items of `pages`, the next one read while the caller works on the current one."""
    reading: asyncio.Future[T] = asyncio.ensure_future(anext(pages))
    try:
        while True:
            try:
                page = await reading
            except StopAsyncIteration:
                return
            reading = asyncio.ensure_future(anext(pages))
            await asyncio.sleep(0)  # let it send its request
            yield page
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await reading


async def _last_id(redis: Redis | RedisCluster, stream: str) -> str | None:
    rows: Any = await redis.xrevrange(stream, "+", "-", count=1)
    return reply_text(rows[0][0]) if rows else None


async def known_cameras(
    redis: Redis | RedisCluster,
    names: StreamNames,
    conn: AsyncConnection,
    schemas: Iterable[str | None],
) -> set[str]:
    """Cameras of the `camera-ids` set and of the `cameras` table of each schema (None: the one
    the search_path finds)."""
    members: Any = await redis.smembers(names.camera_set)
    found = {reply_text(member) for member in members}
    for schema in schemas:
        table = qualified(cameras.name, schema)
        rows = await conn.execute(text(f"SELECT id FROM {table}"))  # noqa: S608 (quoted name)
        found.update(str(row[0]) for row in rows)
    return found


class _Rebuild:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis | RedisCluster,
        names: StreamNames,
        tables: ShadowTables,
        run: _Run,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._names = names
        self._tables = tables
        self._run = run

    async def _read_stream(self, stream: str, until: str, conn: AsyncConnection | None) -> int:
        """Apply the entries of `stream` after its position up to `until`; returns how many.

        Outside a caller's transaction each page commits on its own, and the next page is read
        and mapped while PostgreSQL writes the previous one (pages still commit in order)."""
        run = self._run
        pages = _pages(self._redis, stream, run.positions.get(stream), until, run.config.page_size)
        read = 0
        if conn is not None:
            async for page in pages:
                read += self._applied(
                    stream, page, await run.projector.apply_on(conn, stream, page)
                )
            return read
        writing: tuple[list[StreamEntry], asyncio.Task[ProjectionResult]] | None = None
        try:
            async for page in pages:
                batch = await run.projector.prepare_yielding(stream, page)
                if writing is not None:
                    read += self._applied(stream, writing[0], await writing[1])
                task = asyncio.create_task(run.projector.apply_prepared(stream, batch))
                writing = (page, task)
            if writing is not None:
                read += self._applied(stream, writing[0], await writing[1])
                writing = None
        finally:
            if writing is not None:  # failed meanwhile: roll the page back, do not leak it
                writing[1].cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writing[1]
        return read

    def _applied(self, stream: str, page: list[StreamEntry], result: ProjectionResult) -> int:
        """Record a committed page: the stream's position and the counters; its entries."""
        self._run.positions[stream] = page[-1][0]
        self._run.count(len(page), len(result.applied), len(result.failed))
        return len(page)

    async def _discover(self, conn: AsyncConnection, extra: Iterable[str]) -> None:
        schemas = (self._tables.live, self._tables.shadow)
        self._run.add_cameras(extra)
        self._run.add_cameras(await known_cameras(self._redis, self._names, conn, schemas))

    async def load(self, extra_cameras: Iterable[str]) -> None:
        """Steps 2–3: the snapshot, read up to its ids in one bulk load; when PostgreSQL refuses
        the bulk rows, read again page by page through the projector."""
        if not self._run.config.bulk:
            await self._paged(extra_cameras)
            return
        try:
            with paused_gc():
                async with self._engine.connect() as conn, conn.begin():
                    loaded = await self._bulk(conn, extra_cameras)
        except BulkRefusedError as exc:
            log_event(
                logger,
                "replay.bulk_refused",
                level=logging.WARNING,
                schema=self._tables.live,
                error=str(exc),
                then="loading page by page through the projector",
            )
            self._run.restart()
            await self._paged(extra_cameras)
            return
        self._run.positions.update(loaded)
        self._run.bulk = True

    async def _bulk(
        self, conn: AsyncConnection, extra_cameras: Iterable[str]
    ) -> dict[str, str | None]:
        """The snapshot and `projections.bulk`'s load up to it, in the caller's transaction
        (on the empty shadow tables); the last id read of each stream, its position once the
        transaction commits."""
        run = self._run
        raw = (await conn.get_raw_connection()).driver_connection
        if not isinstance(raw, psycopg.AsyncConnection):
            raise ReplayError(f"a replay needs the psycopg driver, not {type(raw).__name__}")
        async with BulkLoad(raw, run.projector, self._tables.shadow) as loader:
            return await self._bulk_load(conn, loader, extra_cameras)

    async def _bulk_load(
        self, conn: AsyncConnection, loader: BulkLoad, extra_cameras: Iterable[str]
    ) -> dict[str, str | None]:
        run = self._run
        done: dict[str, str | None] = {}
        cameras_stream = self._names.cameras
        run.positions[cameras_stream] = None
        # The cameras stream first: the cameras it registers are cameras to read.
        end = await _last_id(self._redis, cameras_stream)
        run.total += int(await self._redis.xlen(cameras_stream))
        done[cameras_stream] = await self._bulk_stream(loader, cameras_stream, end)
        run.add_cameras(loader.cameras())
        await loader.settle()
        await self._discover(conn, extra_cameras)
        ends = await self._snapshot(skip=cameras_stream)
        for stream, stream_end in ends.items():
            done[stream] = await self._bulk_stream(loader, stream, stream_end)
        await loader.finish()
        return done

    async def _snapshot(self, *, skip: str) -> dict[str, str | None]:
        """The last id of every stream to read but `skip` (None: empty), their lengths added to
        the total."""
        run = self._run
        ends = {}
        for stream in run.positions:
            if stream == skip:
                continue
            ends[stream] = await _last_id(self._redis, stream)
            run.total += int(await self._redis.xlen(stream))
        return ends

    async def _bulk_stream(self, loader: BulkLoad, stream: str, end: str | None) -> str | None:
        """One stream up to `end` (none: empty) through the bulk load; the last id read."""
        run = self._run
        pages = (
            _empty()
            if end is None
            else _pages(self._redis, stream, None, end, run.config.page_size)
        )
        return await loader.read(stream, _ahead(pages), run.count)

    async def _paged(self, extra_cameras: Iterable[str]) -> None:
        """Steps 2–3 page by page through the projector, one transaction per page."""
        run = self._run
        cameras_stream = self._names.cameras
        run.positions[cameras_stream] = None
        # The cameras stream first: the cameras it registers are cameras to read.
        end = await _last_id(self._redis, cameras_stream)
        run.total += int(await self._redis.xlen(cameras_stream))
        if end is not None:
            await self._read_stream(cameras_stream, end, None)
        async with self._engine.connect() as conn:
            await self._discover(conn, extra_cameras)
        ends = await self._snapshot(skip=cameras_stream)
        for stream, stream_end in ends.items():
            if stream_end is not None:
                await self._read_stream(stream, stream_end, None)

    async def catch_up(self) -> None:
        """Step 4: read what was appended meanwhile, until a round finds little."""
        run = self._run
        for _ in range(run.config.catch_up_rounds):
            async with self._engine.connect() as conn:
                await self._discover(conn, ())
            read = 0
            for stream in list(run.positions):
                read += await self._read_stream(stream, "+", None)
            if read < run.config.catch_up_threshold:
                return

    async def tail(self, conn: AsyncConnection) -> int:
        """The entries appended since the last read, applied in the caller's transaction (the
        live tables locked); new cameras are followed until none appears."""
        run = self._run
        read = 0
        while True:
            known = len(run.cameras)
            for stream in list(run.positions):
                read += await self._read_stream(stream, "+", conn)
            await self._discover(conn, ())
            if len(run.cameras) == known:
                return read


def _report(
    tables: ShadowTables, run: _Run, tail: int, started: float, swapped: bool
) -> ReplayReport:
    return ReplayReport(
        schema=tables.live,
        cameras=tuple(sorted(run.cameras)),
        streams=len(run.positions),
        entries=run.read,
        applied=run.applied,
        failed=run.failed,
        tail=tail,
        seconds=round(time.monotonic() - started, 3),
        swapped=swapped,
        bulk=run.bulk,
    )


async def _load(
    engine: AsyncEngine,
    redis: Redis | RedisCluster,
    names: StreamNames,
    tables: ShadowTables,
    cameras: Iterable[str],
    progress: Progress | None,
    config: ReplayConfig,
    projection: str,
) -> tuple[_Rebuild, _Run]:
    """Steps 2–4: fill the shadow tables up to (nearly) the end of the streams."""
    projector = Projector(engine, names, projection, schema=tables.shadow)
    run = _Run(names, projector, config, progress)
    builder = _Rebuild(engine, redis, names, tables, run)
    await builder.load(cameras)
    await create_indexes(engine, tables)
    await builder.catch_up()
    return builder, run


async def _locked(
    engine: AsyncEngine,
    tables: ShadowTables,
    builder: _Rebuild,
    run: _Run,
    mode: str,
    finish: Callable[[AsyncConnection], Awaitable[T]],
) -> tuple[int, T]:
    """Apply the tail and run `finish` in one transaction holding `mode` locks on the live
    tables; (tail entries, what `finish` returned). A lock timeout rolls back (the positions
    too), catches up once more and tries again."""
    config = run.config
    attempt = 0
    while True:
        attempt += 1
        saved = (run.snapshot(), run.read, run.applied, run.failed, set(run.cameras))
        try:
            async with engine.connect() as conn, conn.begin():
                await lock_live(conn, tables.live, mode, config.lock_timeout_ms)
                tail = await builder.tail(conn)
                outcome = await finish(conn)
            return tail, outcome
        except DBAPIError as exc:
            run.positions, run.read, run.applied, run.failed, run.cameras = saved
            busy = str(getattr(exc.orig, "sqlstate", "") or "") == _LOCK_NOT_AVAILABLE
            if busy and attempt < config.swap_attempts:
                log_event(
                    logger,
                    "replay.lock_busy",
                    schema=tables.live,
                    attempt=attempt,
                )
                await builder.catch_up()
                continue
            if busy:
                raise ReplayError(
                    f"could not lock the projection tables of schema {tables.live!r} within "
                    f"{config.lock_timeout_ms} ms, {attempt} times; the live projection is "
                    "unchanged. Long-running queries on those tables block the swap: try "
                    "again later, or allow a longer lock_timeout_ms"
                ) from exc
            raise ReplayError(
                f"the final step on schema {tables.live!r} failed: {exc.orig}; the live "
                "projection is unchanged"
            ) from exc


async def rebuild(
    engine: AsyncEngine,
    redis: Redis | RedisCluster,
    names: StreamNames,
    *,
    cameras: Iterable[str] = (),
    progress: Progress | None = None,
    config: ReplayConfig | None = None,
    projection: str = DEFAULT_PROJECTION,
    before_swap: Callable[[], Awaitable[None]] | None = None,
) -> ReplayReport:
    """Rebuild the projection tables from the streams and swap them in (see the module doc).

    `cameras` adds cameras to those found in Redis and in the live tables; `progress(done,
    total)` is called after every page; `before_swap()` is awaited once the shadow tables have
    caught up, right before the swap takes its locks (to announce it). The scratch schemas are
    dropped in every case.
    """
    config = config or ReplayConfig()
    started = time.monotonic()
    live = await live_schema(engine)
    shadow, old = scratch_schema(live, "rebuild"), scratch_schema(live, "old")
    async with maintenance_lock(engine, live, "a replay"):
        try:
            tables = await create_shadow(engine, live, shadow)
            builder, run = await _load(
                engine, redis, names, tables, cameras, progress, config, projection
            )

            async def finish(conn: AsyncConnection) -> None:
                await swap(conn, tables, old)

            if before_swap is not None:
                await before_swap()
            tail, _ = await _locked(engine, tables, builder, run, "ACCESS EXCLUSIVE", finish)
        finally:
            await drop_schemas(engine, [shadow, old])
    report = _report(tables, run, tail, started, swapped=True)
    log_event(logger, "replay.swapped", **asdict(report))
    return report


async def verify(
    engine: AsyncEngine,
    redis: Redis | RedisCluster,
    names: StreamNames,
    *,
    cameras: Iterable[str] = (),
    progress: Progress | None = None,
    config: ReplayConfig | None = None,
    projection: str = DEFAULT_PROJECTION,
) -> VerifyReport:
    """Rebuild into a shadow schema, compare it with the live tables and drop it (see the
    module doc); the live projection is not changed."""
    config = config or ReplayConfig()
    started = time.monotonic()
    live = await live_schema(engine)
    shadow = scratch_schema(live, "verify")
    async with maintenance_lock(engine, live, "a verification"):
        try:
            tables = await create_shadow(engine, live, shadow)
            builder, run = await _load(
                engine, redis, names, tables, cameras, progress, config, projection
            )

            async def finish(conn: AsyncConnection) -> list[TableDiff]:
                return await compare(conn, live, shadow, config.sample_size)

            tail, diffs = await _locked(engine, tables, builder, run, "SHARE", finish)
        finally:
            await drop_schemas(engine, [shadow])
    report = VerifyReport(_report(tables, run, tail, started, swapped=False), tuple(diffs))
    log_event(
        logger,
        "replay.verified",
        schema=live,
        equal=report.equal,
        differences={d.table: (d.only_live, d.only_rebuilt) for d in report.differences},
    )
    return report

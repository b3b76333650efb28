"""A rebuild's initial load: every entry up to the snapshot, as final rows, by COPY.

Step 3 of a rebuild (`projections.replay`) fills empty shadow tables from the start of the
streams up to the snapshot ids. The projector's path would do it page by page with tracking rows
inserted with RETURNING, ON CONFLICT upserts and a media row written by its file and again by its
detection. Here instead, stream by stream:

- each page is read and mapped by the projector's own mapping (`Projector.map_entries`, that is
  `projections.rows.rows_for`), so the same entries are applied and the same ones fail;
- the row upserts are folded in memory into the rows they leave (`projections.upserts.FinalRows`:
  each upsert changes the row as its SQL would, with the same merges);
- the final rows are written by COPY, with one tracking row per entry applied. A camera's streams
  are read one after the other in `PROJECTED` order, so the camera's rows of a table are final,
  and written, once no later stream of the camera writes that table (`rows.WRITES`); rows written
  by their own entry only (`rows.ENTRY_ROWS`) and tracking rows are written as they accumulate;
  the rows cameras share (`rows.SHARED_ROWS`: camera rows, re-analysis runs) at the end. Memory
  holds about one camera's rows of one table at a time; one COPY runs in the background while
  the next pages are read and mapped.

Values reach COPY as Python objects, where the projector's path sends them as JSON: the same
values (entries are parsed by orjson, so floats are finite, and text travels unchanged) except a
NUL character, which the projector's path replaces and COPY refuses.

The cyclic garbage collector is paused during the load (`paused_gc`): the load makes millions
of small dicts and tuples while it holds a camera's rows, and the collector's passes over those
rows took about a quarter of the load's CPU, for next to nothing to collect (mapping makes no
reference cycles; any made meanwhile are collected once the load ends).

Every row is written once. When a key shows up again after its row was written (an entry that
writes another table than `rows.WRITES` says, a batch id used by two cameras), COPY fails on the
table's primary key; when PostgreSQL refuses a value (out of range, a NUL), COPY fails too. Both
raise `BulkRefusedError`, and the caller rolls the load back and loads page by page through the
projector instead, which applies what it can and refuses only the entries at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from projections.projector import Projector
from projections.rows import CAMERAS_SOURCE, ENTRY_ROWS, SHARED_ROWS, WRITES
from projections.tables import WRITE_ORDER, checkpoints
from projections.upserts import FinalRows, TableRows
from streams.contract import StreamEntry
from streams.names import PROJECTED

# Called after every page: (entries read, entries applied, entries failed).
PageDone = Callable[[int, int, int], None]

# Tracking rows and rows of `ENTRY_ROWS` held before they are written.
FLUSH_ROWS = 20_000
# Entries mapped between two turns of the write in flight.
SLICE = 250

_TRACKING_COLUMNS = ("projection", "stream", "entry_id")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off inside the block (as it was after)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class BulkRefusedError(Exception):
    """PostgreSQL refused rows of the bulk load (a key written twice, a value out of range); the
    load must be rolled back."""


def final_after(kind: str) -> frozenset[str]:
    """The tables whose rows of a camera are final once its `kind` stream is read, when a
    camera's streams are read in `PROJECTED` order: those no later stream of the camera writes,
    less the rows cameras share."""
    if kind == CAMERAS_SOURCE:
        return frozenset()
    later = PROJECTED[PROJECTED.index(kind) + 1 :]  # a StreamKind equals its value
    written = frozenset().union(*(WRITES[k] for k in later))
    return frozenset(WRITE_ORDER) - written - SHARED_ROWS


@functools.lru_cache(maxsize=256)
def copy_sql(schema: str, table: str, columns: tuple[str, ...]) -> sql.Composed:
    """`COPY "schema"."table" ("c1", …) FROM STDIN`."""
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


class BulkLoad:
    """Entries read stream by stream into final rows, written by COPY into the empty tables of
    `schema` through `conn`, in the caller's transaction.

    One COPY runs at a time, in the background: the next pages are mapped while PostgreSQL
    writes the rows taken before (`settle` waits for it). Leaving the `async with` block cancels
    a write still running (the caller then rolls back)."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        projector: Projector,
        schema: str,
        *,
        flush_rows: int = FLUSH_ROWS,
        slice_size: int = SLICE,
    ) -> None:
        self._conn = conn
        self._projector = projector
        self._schema = schema
        self._flush_rows = flush_rows
        self._slice = slice_size
        self._rows = FinalRows()
        self._tracking: list[tuple[str, str, str]] = []
        self._writing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BulkLoad:
        return self

    async def __aexit__(self, *_: object) -> None:
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writing

    async def read(
        self, stream: str, pages: AsyncIterable[Sequence[StreamEntry]], done: PageDone | None
    ) -> str | None:
        """Map and merge every page of `stream` and write the rows that are then final (see the
        module doc for the order streams must come in); the last entry id read."""
        kind, _ = self._projector.source(stream)
        projection = self._projector.projection
        add = self._rows.add
        last: str | None = None
        async for page in pages:
            applied = failed = 0
            for start in range(0, len(page), self._slice):
                batch = self._projector.map_entries(stream, page[start : start + self._slice])
                for _, ops in batch.entries:
                    add(ops)
                self._tracking.extend((projection, stream, i) for i, _ in batch.entries)
                applied += len(batch.entries)
                failed += len(batch.failed)
                await asyncio.sleep(0)  # the write in flight goes on
            last = page[-1][0]
            if done is not None:
                done(len(page), applied, failed)
            if len(self._tracking) + self._rows.count(ENTRY_ROWS) >= self._flush_rows:
                await self._write(ENTRY_ROWS)
        await self._write(final_after(kind))
        return last

    def cameras(self) -> list[str]:
        """The cameras whose rows are held (those the cameras stream registered, once read)."""
        return [str(key[0]) for key in self._rows.keys("cameras")]

    async def finish(self) -> None:
        """Write every row still held, and wait until it is written."""
        await self._write(WRITE_ORDER)
        await self.settle()

    async def settle(self) -> None:
        """Wait for the write in flight (the connection is free afterwards)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _write(self, tables: Iterable[str]) -> None:
        """Take the rows of `tables` and the tracking rows, and start writing them once the
        previous write is done."""
        taken = self._rows.take(tables)
        tracking, self._tracking = self._tracking, []
        if tracking:
            taken.insert(0, TableRows(str(checkpoints.name), _TRACKING_COLUMNS, tracking))
        if not taken:
            return
        await self.settle()
        self._writing = asyncio.create_task(self._copy_all(taken))
        await asyncio.sleep(0)  # let it start

    async def _copy_all(self, taken: list[TableRows]) -> None:
        try:
            async with self._conn.cursor() as cur:
                for group in taken:
                    statement = copy_sql(self._schema, group.table, group.columns)
                    async with cur.copy(statement) as copy:
                        for row in group.rows:
                            await copy.write_row(row)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise BulkRefusedError(f"{type(exc).__name__}: {exc}") from exc

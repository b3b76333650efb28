"""Shadow copies of the projection tables: create, swap in, compare, drop.

A shadow schema holds empty tables shaped exactly like the live ones: `CREATE TABLE … (LIKE live
INCLUDING ALL EXCLUDING INDEXES)` copies columns, defaults, NOT NULL and CHECK constraints; the
primary keys and unique constraints are added under their live names, and the other indexes are
created from their live definitions after the bulk load (`create_indexes`), under their live
names too, so after a swap the migrations find every index and constraint where they put it.
Grants on the live tables are copied. Foreign keys and triggers are not (the projection tables
have none).

The swap moves the live tables to a scratch schema and the shadow ones into the live schema with
`ALTER TABLE … SET SCHEMA`, in the caller's transaction, which holds ACCESS EXCLUSIVE locks on
the live tables: readers wait for the commit and then see the new tables, never a mix.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.errors import MaintenanceBusyError, ReplayError
from projections.tables import TABLES, checkpoints, column_names, key_of, qualified, quote_ident
from streams.logs import log_event

logger = logging.getLogger("hsi.replay")

_MAX_IDENTIFIER = 63
_LIKE = "INCLUDING ALL EXCLUDING INDEXES"


def scratch_schema(live: str, purpose: str) -> str:
    """A fresh schema name next to `live`: `<live>_<purpose>_<8 hex>`, within 63 characters."""
    suffix = f"_{purpose}_{secrets.token_hex(4)}"
    return live[: _MAX_IDENTIFIER - len(suffix)] + suffix


def maintenance_lock_key(live: str) -> int:
    """The advisory lock key that serializes replays, verifications and retention of a schema."""
    digest = hashlib.sha256(f"hsi-read-side-maintenance:{live}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def maintenance_lock(engine: AsyncEngine, live: str, what: str) -> AsyncIterator[None]:
    """Hold the read side's maintenance lock for `live` (a session advisory lock) or refuse."""
    key = maintenance_lock_key(live)
    async with engine.connect() as conn:
        got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        await conn.commit()
        if not got:
            raise MaintenanceBusyError(
                f"cannot start {what}: another replay, verify or retention run is working on "
                f"schema {live!r}; wait for it to finish and try again"
            )
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await conn.commit()


async def live_schema(engine: AsyncEngine) -> str:
    """The schema the projection tables are found in through the engine's search path."""
    async with engine.connect() as conn:
        schema = await conn.scalar(
            text(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(:t)"
            ),
            {"t": checkpoints.name},
        )
    if schema is None:
        raise ReplayError(
            "the projection tables do not exist in the database's search path; run "
            "`hsi migrate` first"
        )
    return str(schema)


@dataclass(frozen=True)
class ShadowTables:
    """A shadow schema created by `create_shadow`, with the index DDL deferred to after the load."""

    live: str
    shadow: str
    deferred_indexes: tuple[str, ...]


async def _relation(conn: AsyncConnection, schema: str, table: str) -> int:
    oid = await conn.scalar(
        text("SELECT to_regclass(:name)::oid"), {"name": qualified(table, schema)}
    )
    if oid is None:
        raise ReplayError(
            f"table {schema}.{table} does not exist; run `hsi migrate` before a replay"
        )
    return int(oid)


async def create_shadow(engine: AsyncEngine, live: str, shadow: str) -> ShadowTables:
    """Create `shadow` with empty copies of the live projection tables (keys, no other indexes)."""
    deferred: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {quote_ident(shadow)}"))
        for table in TABLES:
            deferred.extend(await _copy_table(conn, table, live, shadow))
    log_event(logger, "replay.shadow_created", live=live, shadow=shadow)
    return ShadowTables(live, shadow, tuple(deferred))


async def _copy_table(conn: AsyncConnection, table: Table, live: str, shadow: str) -> list[str]:
    oid = await _relation(conn, live, table.name)
    source, target = qualified(table.name, live), qualified(table.name, shadow)
    await conn.execute(text(f"CREATE TABLE {target} (LIKE {source} {_LIKE})"))
    constraints = await conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid), conindid FROM pg_constraint "
            "WHERE conrelid = :oid AND contype IN ('p', 'u', 'x') ORDER BY conname"
        ),
        {"oid": oid},
    )
    backing: set[int] = set()
    for name, definition, index in constraints:
        backing.add(int(index))
        await conn.execute(
            text(f"ALTER TABLE {target} ADD CONSTRAINT {quote_ident(name)} {definition}")
        )
    indexes = await conn.execute(
        text(
            "SELECT indexrelid, pg_get_indexdef(indexrelid), "
            "format('%I.%I', CAST(:live AS text), CAST(:table AS text)) "
            "FROM pg_index WHERE indrelid = :oid ORDER BY indexrelid"
        ),
        {"oid": oid, "live": live, "table": table.name},
    )
    deferred: list[str] = []
    for index, definition, rendered in indexes:
        if int(index) in backing:
            continue
        marker = f" ON {rendered} "
        if marker not in definition:
            raise ReplayError(
                f"cannot copy index definition {definition!r} of {live}.{table.name}; "
                "recreate the index in a migration with a plain CREATE INDEX"
            )
        deferred.append(definition.replace(marker, f" ON {target} ", 1))
    grants = await conn.execute(
        text(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
            "ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = :oid "
            "AND a.grantee <> c.relowner"
        ),
        {"oid": oid},
    )
    for grantee, privilege in grants:
        await conn.execute(text(f"GRANT {privilege} ON {target} TO {grantee}"))
    return deferred


async def create_indexes(engine: AsyncEngine, tables: ShadowTables) -> None:
    """Build the deferred indexes and refresh the planner statistics of the shadow tables."""
    async with engine.begin() as conn:
        for ddl in tables.deferred_indexes:
            await conn.execute(text(ddl))
        for table in TABLES:
            await conn.execute(text(f"ANALYZE {qualified(table.name, tables.shadow)}"))


async def lock_live(conn: AsyncConnection, live: str, mode: str, lock_timeout_ms: int) -> None:
    """Lock every live projection table in `mode` (checkpoints first, as projectors do)."""
    await conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
    names = ", ".join(qualified(table.name, live) for table in TABLES)
    await conn.execute(text(f"LOCK TABLE {names} IN {mode} MODE"))


async def _dependent_views(conn: AsyncConnection, live: str) -> list[str]:
    rows = await conn.execute(
        text(
            "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d "
            "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
            "WHERE d.refobjid = ANY(CAST(:oids AS oid[])) AND v.oid <> d.refobjid"
        ),
        {"oids": [await _relation(conn, live, table.name) for table in TABLES]},
    )
    return sorted(str(row[0]) for row in rows)


async def swap(conn: AsyncConnection, tables: ShadowTables, old: str) -> None:
    """Move the live tables to `old` and the shadow tables into the live schema.

    Runs in the caller's transaction, which must hold ACCESS EXCLUSIVE locks on the live tables.
    """
    views = await _dependent_views(conn, tables.live)
    if views:
        raise ReplayError(
            f"views depend on the projection tables ({', '.join(views)}); they would keep "
            "showing the old tables after a swap. Drop them, replay, and create them again"
        )
    await conn.execute(text(f"CREATE SCHEMA {quote_ident(old)}"))
    for table in TABLES:
        await conn.execute(
            text(f"ALTER TABLE {qualified(table.name, tables.live)} SET SCHEMA {quote_ident(old)}")
        )
    for table in TABLES:
        await conn.execute(
            text(
                f"ALTER TABLE {qualified(table.name, tables.shadow)} "
                f"SET SCHEMA {quote_ident(tables.live)}"
            )
        )


async def drop_schemas(engine: AsyncEngine, schemas: Sequence[str]) -> None:
    """Drop scratch schemas made by a replay (their tables included); errors are logged."""
    for schema in schemas:
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE"))
        except Exception as exc:
            log_event(
                logger,
                "replay.drop_failed",
                level=logging.WARNING,
                schema=schema,
                error=f"{type(exc).__name__}: {exc}",
                fix=f"drop it by hand: DROP SCHEMA {quote_ident(schema)} CASCADE",
            )


# --- comparing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableDiff:
    """How one table of the live projection differs from a rebuild."""

    table: str
    only_live: int  # rows in the live table that the rebuild does not have
    only_rebuilt: int  # rows of the rebuild that the live table lacks
    sample_only_live: tuple[str, ...] = ()  # their keys, "a/b" for composite keys
    sample_only_rebuilt: tuple[str, ...] = ()

    @property
    def equal(self) -> bool:
        return self.only_live == 0 and self.only_rebuilt == 0


def compared_columns(table: Table) -> tuple[str, ...]:
    """The columns compared: all but the time a checkpoint was written."""
    return tuple(c for c in column_names(table) if not (table is checkpoints and c == "applied_at"))


async def _except(
    conn: AsyncConnection, table: Table, left: str, right: str, sample: int
) -> tuple[int, tuple[str, ...]]:
    columns = ", ".join(quote_ident(c) for c in compared_columns(table))
    key = "concat_ws('/', " + ", ".join(f"{quote_ident(c)}::text" for c in key_of(table)) + ")"
    # Identifiers only, from the table metadata, quoted (S608).
    difference = (
        f"SELECT {columns} FROM {qualified(table.name, left)} "  # noqa: S608
        f"EXCEPT SELECT {columns} FROM {qualified(table.name, right)}"
    )
    count = await conn.scalar(text(f"SELECT count(*) FROM ({difference}) d"))  # noqa: S608
    if not count:
        return 0, ()
    keys = await conn.execute(
        text(f"SELECT {key} AS k FROM ({difference}) d ORDER BY k LIMIT :n"),  # noqa: S608
        {"n": sample},
    )
    return int(count), tuple(str(row[0]) for row in keys)


async def compare(conn: AsyncConnection, live: str, shadow: str, sample: int) -> list[TableDiff]:
    """Each table's rows that only one side has (`EXCEPT` both ways), with a few of their keys."""
    diffs = []
    for table in TABLES:
        only_live, live_keys = await _except(conn, table, live, shadow, sample)
        only_rebuilt, rebuilt_keys = await _except(conn, table, shadow, live, sample)
        diffs.append(TableDiff(str(table.name), only_live, only_rebuilt, live_keys, rebuilt_keys))
    return diffs

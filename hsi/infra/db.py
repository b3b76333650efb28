"""PostgreSQL access: the async engine factory, the read path of the query API's busiest
listings, and the migration runner.

Nothing here runs at import time: the CLI command or the app's lifespan calls `create_engine()` and
disposes the engine when it is done.

Checking pooled connections. By default every checkout pings the server first (SQLAlchemy's
`pool_pre_ping`): a round trip per checkout. A pool with `PoolConfig.check_idle_seconds` checks
the way pgbouncer's `server_check_delay` does: a connection used within that many seconds is
handed out without a ping, unless its socket shows that the server spoke while it was idle (the
server ends a connection — restart, shutdown, `pg_terminate_backend`, idle timeouts — by sending
its reason and closing it, which leaves the socket readable); one idle for longer, or whose server
spoke, is pinged. A failed ping invalidates the pool as the pre-ping does, so the connections
opened before it are replaced too, and the caller gets a fresh connection instead of an error.

Reading rows (`fetch_rows`). SQLAlchemy's execution wrapper (a `Connection`, an execution
context, a result with its metadata, a greenlet switch per call) cost the query API more CPU per
listing than PostgreSQL spends answering it. Given the engine, `fetch_rows` checks a connection
out of the engine's pool and runs the statement on its psycopg connection directly, keeping what
the wrapper was kept for: a driver error is raised as SQLAlchemy's `DBAPIError` of the same kind
(the API answers it as its 503), and a connection the error shows dead (closed or broken) is
invalidated, not returned to the pool. Given a connection, it runs the same statement through it.
"""

from __future__ import annotations

import hashlib
import re
import select
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from projections.driver import on_driver

# pg_advisory_lock key: the first 8 bytes of sha256("hsi-migrations") as a signed bigint.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"hsi-migrations").digest()[:8], "big", signed=True
)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseError(RuntimeError):
    """PostgreSQL could not be used; the message says why and what to do."""


class MigrationError(DatabaseError):
    """A migration file failed; nothing of it was applied."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(
            f"migration {name} failed and was rolled back: {cause}. Fix the SQL file and run "
            "`hsi migrate` again; earlier migrations stay applied."
        )
        self.name = name


@dataclass(frozen=True)
class PoolConfig:
    size: int = 10
    max_overflow: int = 20
    timeout_seconds: float = 30.0
    recycle_seconds: int = 1800
    echo: bool = False
    # None: ping on every checkout; seconds: ping only a connection idle for longer, or whose
    # server spoke while it was idle (see the module docstring).
    check_idle_seconds: float | None = None


def create_engine(
    url: str,
    pool: PoolConfig | None = None,
    *,
    schema: str | None = None,
    autocommit: bool = False,
    timezone: str | None = None,
) -> AsyncEngine:
    """An async engine on psycopg 3. `schema` pins the search_path (tests use one schema each),
    `timezone` the sessions' TimeZone (`UTC`: psycopg hands back times already in UTC).

    `autocommit` is for readers that run only queries, at READ COMMITTED (the query API): each
    statement sees a snapshot of its own, as it would inside a transaction at that level, without
    the BEGIN and ROLLBACK round trips around every checkout (and without a rollback when a
    connection returns to the pool, as none is ever left open)."""
    pool = pool or PoolConfig()
    connect_args: dict[str, object] = {"connect_timeout": 10}
    settings = {"search_path": schema, "TimeZone": timezone}
    options = " ".join(f"-c {name}={value}" for name, value in settings.items() if value)
    if options:
        # `options` in connect_args replaces the URL's own (a search_path given there): keep it,
        # before these, which win where both name a setting.
        parsed = make_url(url)
        given = parsed.query.get("options")
        if given:
            options = " ".join([given] if isinstance(given, str) else list(given)) + " " + options
            url = parsed.difference_update_query(["options"]).render_as_string(hide_password=False)
        connect_args["options"] = options
    reads: dict[str, object] = (
        {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}
    )
    engine = create_async_engine(
        url,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_seconds,
        pool_recycle=pool.recycle_seconds,
        pool_pre_ping=pool.check_idle_seconds is None,
        echo=pool.echo,
        connect_args=connect_args,
        **reads,
    )
    if pool.check_idle_seconds is not None:
        check_idle_connections(engine, pool.check_idle_seconds)
    return engine


# --- checking pooled connections ----------------------------------------------------------------

_RETURNED_AT = "hsi.returned_at"  # connection-record info: monotonic time of the last checkin


def server_spoke(driver_connection: object) -> bool:
    """Whether an idle psycopg connection's socket has something to read (or cannot be asked):
    an idle connection's server sends nothing unless it is ending it."""
    try:
        assert isinstance(driver_connection, psycopg.AsyncConnection | psycopg.Connection)
        fd = driver_connection.pgconn.socket
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except (AssertionError, OSError, ValueError, psycopg.Error):
        return True


def needs_ping(returned_at: float | None, now: float, idle_seconds: float, spoke: bool) -> bool:
    """Whether a connection checked in at `returned_at` (None: never, it is new) is pinged."""
    if returned_at is None:
        return False
    return spoke or now - returned_at > idle_seconds


def check_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Check the engine's pooled connections on checkout as the module docstring says."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _check(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None:
            return
        spoke = server_spoke(proxy.driver_connection)
        if not needs_ping(returned_at, time.monotonic(), idle_seconds, spoke):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError(f"the server ended the connection: {exc}") from exc
            raise


# --- reading rows -------------------------------------------------------------------------------


async def fetch_rows(
    source: AsyncEngine | AsyncConnection, statement: str, params: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """The rows of one read-only `statement` (psycopg's `%(name)s` parameters): on a connection
    of the engine's pool, on its psycopg connection directly (`projections.driver`), or through
    the connection given (see the module docstring)."""
    if isinstance(source, AsyncConnection):
        return (await source.exec_driver_sql(statement, dict(params))).all()

    async def read(driver: psycopg.AsyncConnection[Any]) -> Sequence[Sequence[Any]]:
        async with driver.cursor() as cursor:
            await cursor.execute(statement, params)
            rows = await cursor.fetchall()
        if not driver.autocommit:
            await driver.rollback()
        return rows

    try:
        return await on_driver(source, read)
    except DBAPIError as exc:
        if exc.statement is None:  # name the statement, as SQLAlchemy's errors do
            exc.statement, exc.params = statement, dict(params)
        raise


# --- migrations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_migrations_dir() -> Path:
    return Path(str(resources.files("migrations")))


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """The `NNNN_name.sql` files of a folder, in order; a duplicate number is an error."""
    folder = folder or default_migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise DatabaseError(
                f"{path.name}: migration files are named NNNN_lowercase_words.sql; rename it"
            )
        version = int(match.group(1))
        if version in found:
            raise DatabaseError(f"{path.name}: number {version:04d} is used twice")
        found[version] = Migration(version, path.name, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def applied_migrations(conn: AsyncConnection) -> dict[int, str]:
    exists = await conn.scalar(text("SELECT to_regclass('schema_migrations') IS NOT NULL"))
    if not exists:
        return {}
    rows = await conn.execute(text("SELECT version, name FROM schema_migrations"))
    return {int(v): str(n) for v, n in rows}


async def migrate(engine: AsyncEngine, folder: Path | None = None) -> list[str]:
    """Apply the pending migrations in order, each in its own transaction, under an advisory lock
    so that concurrent runners wait for each other. Returns the names it applied."""
    migrations = load_migrations(folder)
    applied: list[str] = []
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            await conn.commit()
            try:
                async with conn.begin():
                    await conn.execute(text(_CREATE_TABLE))
                done = await applied_migrations(conn)
                await conn.commit()
                for migration in migrations:
                    if migration.version in done:
                        continue
                    try:
                        async with conn.begin():
                            await conn.exec_driver_sql(migration.sql)
                            await conn.execute(
                                text(
                                    "INSERT INTO schema_migrations (version, name, checksum) "
                                    "VALUES (:v, :n, :c)"
                                ),
                                {
                                    "v": migration.version,
                                    "n": migration.name,
                                    "c": migration.checksum,
                                },
                            )
                    except DBAPIError as exc:
                        raise MigrationError(migration.name, str(exc.orig).strip()) from exc
                    applied.append(migration.name)
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                await conn.commit()
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot reach PostgreSQL: {exc.orig}. Is the server running and DATABASE_URL right?"
        ) from exc
    return applied


async def pending_migrations(engine: AsyncEngine, folder: Path | None = None) -> list[str]:
    async with engine.connect() as conn:
        done = await applied_migrations(conn)
    return [m.name for m in load_migrations(folder) if m.version not in done]


async def server_version(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return str(await conn.scalar(text("SHOW server_version")))

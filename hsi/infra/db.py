"""PostgreSQL access: the async engine factory and the migration runner.

Nothing here runs at import time: the CLI command or the app's lifespan calls `create_engine()` and
disposes the engine when it is done.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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


def create_engine(
    url: str,
    pool: PoolConfig | None = None,
    *,
    schema: str | None = None,
    autocommit: bool = False,
) -> AsyncEngine:
    """An async engine on psycopg 3. `schema` pins the search_path (tests use one schema each).

    `autocommit` is for readers that run only queries, at READ COMMITTED (the query API): each
    statement sees a snapshot of its own, as it would inside a transaction at that level, without
    the BEGIN and ROLLBACK round trips around every checkout (and without a rollback when a
    connection returns to the pool, as none is ever left open)."""
    pool = pool or PoolConfig()
    connect_args: dict[str, object] = {"connect_timeout": 10}
    if schema is not None:
        connect_args["options"] = f"-c search_path={schema}"
    options: dict[str, object] = (
        {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}
    )
    return create_async_engine(
        url,
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_seconds,
        pool_recycle=pool.recycle_seconds,
        pool_pre_ping=True,
        echo=pool.echo,
        connect_args=connect_args,
        **options,
    )


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

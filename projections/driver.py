"""Statements on a pooled connection's psycopg connection, with SQLAlchemy's errors kept.

SQLAlchemy's execution wrapper (a `Connection`, an execution context, a result with its
metadata, a greenlet switch per call) costs more CPU per short statement than PostgreSQL spends
on it: the query API's busiest listing and the projector's transactions (four per camera file:
its file, detection, batch and analysis) run their statements on the psycopg connection of a
connection checked out of the engine's pool instead (`on_driver`), keeping what the wrapper was
kept for: a driver error is raised as SQLAlchemy's `DBAPIError` of the same kind (a deadlock is
still told by its SQLSTATE, an outage is still an `OperationalError`), and a connection the error
shows dead (closed or broken), or one left mid-statement by a cancellation, is invalidated, not
returned to the pool. Statements use psycopg's `%(name)s` parameters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

T = TypeVar("T")

Work = Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]


async def on_driver(engine: AsyncEngine, work: Work[T], *, transaction: bool = False) -> T:
    """`work` on the psycopg connection of a connection of `engine`'s pool (in one transaction,
    committed when it returns, if `transaction`); driver errors as SQLAlchemy's."""
    dialect = engine.dialect
    try:
        pooled = await engine.raw_connection()
    except psycopg.Error as exc:
        raise wrapped(exc, None, None, dialect, is_disconnect(dialect, exc, None)) from exc
    dead: BaseException | None = None
    try:
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        if not transaction:
            return await work(driver)
        async with driver.transaction():
            return await work(driver)
    except psycopg.Error as exc:
        invalidated = is_disconnect(dialect, exc, pooled.dbapi_connection)
        dead = exc if invalidated else None
        raise wrapped(exc, None, None, dialect, invalidated) from exc
    except BaseException as exc:
        # Cancelled or interrupted mid-statement (as SQLAlchemy does): the connection's state
        # is unknown.
        dead = None if isinstance(exc, Exception) else exc
        raise
    finally:
        await greenlet_spawn(_give_back, pooled, dead)


def _give_back(pooled: PoolProxiedConnection, dead: BaseException | None) -> None:
    """Return the connection to its pool; one that `dead` ended is closed and replaced."""
    if dead is not None:
        pooled.invalidate(dead)
    pooled.close()


def is_disconnect(dialect: Any, exc: psycopg.Error, dbapi_connection: Any) -> bool:
    return bool(dialect.is_disconnect(exc, dbapi_connection, None))


def wrapped(
    exc: psycopg.Error,
    statement: str | None,
    params: Mapping[str, Any] | None,
    dialect: Any,
    invalidated: bool,
) -> DBAPIError:
    """`exc` as the `DBAPIError` subclass SQLAlchemy raises for it (`OperationalError`, …)."""
    error = DBAPIError.instance(
        statement,
        dict(params) if params is not None else None,
        exc,
        psycopg.Error,
        connection_invalidated=invalidated,
        dialect=dialect,
    )
    assert isinstance(error, DBAPIError)
    return error

"""Keyset pages: fetch `limit + 1` rows after the cursor; the extra row says there is more."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Table, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api.cursor import Cursor, encode_cursor


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    has_more: bool

    def body(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor, "has_more": self.has_more}


def make_page(
    rows: Sequence[Any],
    limit: int,
    item: Callable[[Any], dict[str, Any]],
    key: Callable[[Any], Cursor],
) -> Page:
    has_more = len(rows) > limit
    shown = rows[:limit]
    next_cursor = encode_cursor(key(shown[-1])) if has_more and shown else None
    return Page([item(row) for row in shown], next_cursor, has_more)


def in_window(
    column: ColumnElement[Any], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """The conditions of a listing's time window on `column`: from `since` on, before `until`."""
    out: list[ColumnElement[bool]] = []
    if since is not None:
        out.append(column >= since)
    if until is not None:
        out.append(column < until)
    return out


def uuid_keyset(
    table: Table,
    at: str,
    conditions: list[ColumnElement[bool]],
    limit: int,
    cursor: Cursor | None,
    *,
    older: bool = True,
) -> Select[Any]:
    """`limit + 1` rows of `table` keyed by (`at`, id), past `cursor`: the older ones newest
    first, or (`older=False`) the newer ones oldest first."""
    key = tuple_(table.c[at], table.c.id)
    where = list(conditions)
    if cursor is not None:
        bound = tuple_(cursor.at, uuid.UUID(cursor.key[0]))
        where.append(key < bound if older else key > bound)
    order = (table.c[at], table.c.id)
    return (
        select(table)
        .where(*where)
        .order_by(*(column.desc() if older else column.asc() for column in order))
        .limit(limit + 1)
    )


async def uuid_keyset_page(
    conn: AsyncConnection,
    table: Table,
    at: str,
    kind: str,
    conditions: list[ColumnElement[bool]],
    limit: int,
    after: Cursor | None,
    item: Callable[[Row[Any]], dict[str, Any]],
) -> Page:
    """A page of `table` newest first by (`at` DESC, id DESC); its cursor is of `kind`."""
    rows = (await conn.execute(uuid_keyset(table, at, conditions, limit, after))).all()
    return make_page(rows, limit, item, lambda row: Cursor(kind, row._mapping[at], (str(row.id),)))

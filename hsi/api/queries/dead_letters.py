"""Dead letters as projected from the dead streams, newest first by
(dead_at DESC, camera_id DESC, dead_entry_id DESC)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api import links
from hsi.api.cursor import Cursor
from hsi.api.queries.paging import Page, make_page
from hsi.api.responses import iso, stored_error
from projections.tables import dead_letters

CURSOR_KIND = "dead_letters"
CURSOR_KEY_LENGTH = 2


def dead_letter_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "camera_id": row.camera_id,
        "dead_entry_id": row.dead_entry_id,
        "source_stream": row.source_stream,
        "entry_id": row.entry_id,
        "group": row.group_name,
        "deliveries": row.deliveries,
        "last_error": stored_error(row.last_error),
        "original_type": row.original_type,
        "dead_at": iso(row.dead_at),
        "links": {"camera": links.camera_url(row.camera_id)},
    }


def _cursor_of(row: Row[Any]) -> Cursor:
    return Cursor(CURSOR_KIND, row.dead_at, (row.camera_id, row.dead_entry_id))


async def list_dead_letters(
    conn: AsyncConnection, camera_id: str | None, limit: int, after: Cursor | None
) -> Page:
    d = dead_letters
    conditions: list[ColumnElement[bool]] = []
    if camera_id is not None:
        conditions.append(d.c.camera_id == camera_id)
    if after is not None:
        conditions.append(
            tuple_(d.c.dead_at, d.c.camera_id, d.c.dead_entry_id)
            < tuple_(after.at, after.key[0], after.key[1])
        )
    query = (
        select(d)
        .where(*conditions)
        .order_by(d.c.dead_at.desc(), d.c.camera_id.desc(), d.c.dead_entry_id.desc())
        .limit(limit + 1)
    )
    rows = (await conn.execute(query)).all()
    return make_page(rows, limit, dead_letter_item, _cursor_of)

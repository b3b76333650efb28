"""Full-text search of events (`GET /api/events?q=…`): the events matching a web-search style
query (`person door`, `"front door"`, `car -street`, `person or dog`), best match first, with
every filter of the listing, keyset-paged by (rank DESC, window_start DESC, id DESC).

The document of an event is `projections.tables.SEARCH_DOCUMENT`: its summary (weight A), object
types and zones (B) and reasoning (C). In the configuration the migration stores it in
(`SEARCH_INDEX_LANGUAGE`, english) it is the generated column `events.search` with a GIN index;
a search in another language (SEARCH_LANGUAGE) computes the same document in that language for
each event it looks at instead: correct stemming, no index.

The camera's display name is not in the document: a generated column cannot read the cameras
table, and a copy would go stale when a camera is renamed. The few cameras whose name (or id)
matches the query are looked up first, and their events match too, ranked `CAMERA_RANK` above
what their own document gives.

The query text is always a parameter of `websearch_to_tsquery`, which accepts any input; a query
of only stop words or punctuation matches nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import errors as pg_errors
from sqlalchemy import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api.cursor import Cursor, rank_key
from hsi.api.queries.events import (
    FILTER_SQL,
    LIST_COLUMNS,
    EventFilters,
    event_item,
    event_values,
)
from hsi.api.queries.paging import Page, make_page
from hsi.api.responses import APIError, BadParameter
from projections.tables import SEARCH_DOCUMENT, SEARCH_INDEX_LANGUAGE

MAX_SEARCH_LENGTH = 200
# What a match of the camera's name adds to an event's rank: about what one word of its object
# types or zones gives (`ts_rank` of a single B-weight match is 0.24), less than a summary match.
CAMERA_RANK = 0.2


@dataclass(frozen=True)
class EventSearch:
    """A search: the query text (whitespace collapsed) and its text search configuration."""

    text: str
    language: str

    @property
    def cursor_kind(self) -> str:
        """The kind of this search's cursors: one search's cursor is refused by another."""
        digest = hashlib.sha256(f"{self.language}\n{self.text}".encode()).hexdigest()
        return f"events-search-{digest[:16]}"

    @property
    def indexed(self) -> bool:
        """Whether the stored, indexed document serves this language."""
        return self.language == SEARCH_INDEX_LANGUAGE


def search_text(value: str | None) -> str | None:
    """The query text of `q` with its whitespace collapsed, or None without `q`; 400 when it is
    empty, longer than MAX_SEARCH_LENGTH or holds control characters."""
    if value is None:
        return None
    text = " ".join(value.split())
    if not text:
        raise BadParameter("q", "an empty search; leave q out to list every event")
    if len(text) > MAX_SEARCH_LENGTH:
        raise BadParameter("q", f"{len(text)} characters; a search has at most {MAX_SEARCH_LENGTH}")
    if not text.isprintable():
        raise BadParameter("q", "holds control or unencodable characters; search for words")
    return text


def rank_cursor(rank: float, row: Any, kind: str) -> Cursor:
    """The cursor after `row` of a search: its rank (as Python spells a float, exactly), time
    and id."""
    return Cursor(kind, row.window_start, (repr(rank), str(row.id)))


class SearchLanguageError(APIError):
    """SEARCH_LANGUAGE names no text search configuration of the PostgreSQL server."""

    def __init__(self, language: str) -> None:
        super().__init__(
            500,
            f"SEARCH_LANGUAGE {language!r} is not a text search configuration of this "
            "PostgreSQL server (psql's \\dF lists them: english, simple, german, ...); set "
            "SEARCH_LANGUAGE to one of them and restart the API.",
        )


# The statement's parts, every value a psycopg parameter. The document is the stored column,
# or (another language) the same expression in the searched configuration.
_DOCUMENT = {
    True: "search",
    False: "(" + SEARCH_DOCUMENT.format(config="%(language)s::regconfig") + ")",
}
_QUERY = "websearch_to_tsquery(%(language)s::regconfig, %(q)s)"
_ON_CAMERA = "camera_id = ANY(%(search_cameras)s::text[])"
_CAMERAS_SQL = (
    f"SELECT id FROM cameras, {_QUERY} AS query "  # noqa: S608 - constants only
    "WHERE to_tsvector(%(language)s::regconfig, name || ' ' || id) @@ query"
)
_AFTER = " WHERE (rank, window_start, id) < (%(after_rank)s, %(after_at)s, %(after_id)s)"
_ORDER = " ORDER BY rank DESC, window_start DESC, id DESC LIMIT %(limit)s"


def _statement(indexed: bool, cameras: bool, filters: list[str], after: bool) -> str:
    """The search statement: a subquery that ranks the matching events, paged outside it."""
    document = _DOCUMENT[indexed]
    rank = f"ts_rank({document}, query)::float8"
    match = f"{document} @@ query"
    if cameras:
        rank = f"{rank} + CASE WHEN {_ON_CAMERA} THEN {CAMERA_RANK} ELSE 0 END"
        match = f"({match} OR {_ON_CAMERA})"
    ranked = (
        f"SELECT {LIST_COLUMNS}, {rank} AS rank FROM events, {_QUERY} AS query "  # noqa: S608
        f"WHERE window_start IS NOT NULL AND {match}"
        + "".join(FILTER_SQL[name] for name in filters)
    )
    return (
        f"SELECT {LIST_COLUMNS}, rank FROM ({ranked}) AS found"  # noqa: S608 - constants only
        + (_AFTER if after else "")
        + _ORDER
    )


async def _matching_cameras(conn: AsyncConnection, search: EventSearch) -> list[str]:
    """The cameras whose name or id matches the search."""
    params = {"language": search.language, "q": search.text}
    try:
        rows = (await conn.exec_driver_sql(_CAMERAS_SQL, params)).all()
    except DBAPIError as e:
        if isinstance(e.orig, pg_errors.UndefinedObject):
            raise SearchLanguageError(search.language) from e
        raise
    return [str(row[0]) for row in rows]


def ranked_values(row: Row[Any]) -> dict[str, Any]:
    """`event_values` of a search's row (the listing's columns, then its rank)."""
    return event_values(row[:-1])


async def search_events(
    conn: AsyncConnection,
    filters: EventFilters,
    search: EventSearch,
    limit: int,
    after: Cursor | None,
    item: Callable[[Any], dict[str, Any]] = event_item,
) -> Page:
    """A page of the events matching `search` and `filters`, best first; `item` makes each one
    of a row of the listing's columns and `rank` (`ranked_values` for JSON answers), and its
    rank is added."""
    cameras = await _matching_cameras(conn, search)
    params = filters.parameters()
    filter_names = list(params)
    params.update({"language": search.language, "q": search.text, "limit": limit + 1})
    if cameras:
        params["search_cameras"] = cameras
    if after is not None:
        key = rank_key(after)
        if key is None:
            raise ValueError(f"not a search cursor: {after!r}")
        params["after_rank"], params["after_id"] = key
        params["after_at"] = after.at
    statement = _statement(search.indexed, bool(cameras), filter_names, after is not None)
    rows = (await conn.exec_driver_sql(statement, params)).all()

    def ranked(row: Row[Any]) -> dict[str, Any]:
        found = item(row)
        found["rank"] = round(row[-1], 6)
        return found

    kind = search.cursor_kind
    return make_page(rows, limit, ranked, lambda row: rank_cursor(row[-1], row, kind))

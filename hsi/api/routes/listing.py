"""What every keyset-paged listing does once its parameters are read: fetch the page on a
connection of its own and answer it as JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from hsi.api.queries.paging import Page
from hsi.api.responses import JSON
from hsi.api.state import resources


async def page_response(
    request: Request, fetch: Callable[[AsyncConnection], Awaitable[Page]]
) -> Response:
    """The page `fetch` reads, as `{"items": ..., "next_cursor": ..., "has_more": ...}`."""
    async with resources(request).engine.connect() as conn:
        page = await fetch(conn)
    return JSON(page.body())

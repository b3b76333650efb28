"""Keyset pages: fetch `limit + 1` rows after the cursor; the extra row says there is more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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

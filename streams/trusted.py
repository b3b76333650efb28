"""Entries this process wrote, handed to its own readers without reading them again.

An entry is validated where it enters the system: built as a model by the stage or the watcher
that writes it (pydantic validates on construction), or read from a stream by `read_fields`
(an entry written by another process, a retry, an external writer). The stages of one process
pass each other entries through Redis, and each reader used to decode and validate again what
the writer had just built. `remember` keeps the written model and headers under (stream, entry
id) once its XADD returned the id; `read` gives them back to a reader of that entry, or decodes
the fields when the entry is not here (another process wrote it, or it was forgotten).

Entries are immutable and their ids unique in their stream, and the models are frozen, so a
model remembered is exactly the entry on the stream: what `read_fields` would return but for
the concrete `tzinfo` class of an offset (a zone on the writer's side, a fixed offset read back:
the same instant and offset). Only the newest `SIZE` entries are kept: a reader in the same
process is at most a few batches behind the writer; one further behind decodes as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.envelope import read_fields
from streams.schemas import Entry

SIZE = 2048  # entries kept; about 2 KB each

_entries: dict[tuple[str, str], tuple[Entry, dict[str, Any]]] = {}


def remember(stream: str, entry_id: str, entry: Entry, headers: Mapping[str, str]) -> None:
    """Keep an entry this process wrote to `stream` as `entry_id`, with its full headers."""
    _entries[(stream, entry_id)] = (entry, dict(headers))
    if len(_entries) > SIZE:
        # Dicts keep insertion order: drop the oldest quarter at once.
        for key in list(_entries)[: SIZE // 4]:
            del _entries[key]


def recall(stream: str, entry_id: str) -> tuple[Entry, dict[str, Any]] | None:
    """The entry and headers remembered for `entry_id` of `stream`, or None."""
    return _entries.get((stream, entry_id))


def read(stream: str, entry_id: str, fields: Mapping[bytes, bytes]) -> tuple[Entry, dict[str, Any]]:
    """Entry and headers of a stream entry: remembered, else decoded and validated
    (`read_fields`, `EntryError` when unreadable)."""
    found = recall(stream, entry_id)
    return found if found is not None else read_fields(fields)


def forget() -> None:
    """Forget every entry (tests)."""
    _entries.clear()

"""File-system events handed from watchdog's thread to the event loop.

Watchdog calls `dispatch` on its observer thread; `Handoff` turns the event into a small
`PathEvent` and schedules the watcher's callback on the loop with `call_soon_threadsafe`. Nothing
else happens on the observer thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

logger = logging.getLogger("hsi.watch")

EventKind = Literal["changed", "closed", "moved"]

# inotify: a file appeared (created or moved in) or a writer closed it; moves within the tree.
INOTIFY_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirMovedEvent,
]
# Polling sees no close: a file that keeps growing shows up as modified.
POLLING_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    DirMovedEvent,
]


@dataclass(frozen=True, slots=True)
class PathEvent:
    kind: EventKind  # closed: a writer closed the file (inotify's IN_CLOSE_WRITE)
    path: Path  # the file (for a move: its new path)
    source: Path | None = None  # a move's old path
    synthetic: bool = False  # made up by watchdog for a folder's content (folder moved/created)


def to_path_event(event: FileSystemEvent) -> PathEvent | None:
    """The watcher's view of a watchdog event; None for events it does not act on."""
    if event.is_directory:
        return None  # a moved folder's files arrive as their own (synthetic) move events
    path = Path(os.fsdecode(event.src_path))
    if isinstance(event, FileMovedEvent):
        return PathEvent(
            "moved", Path(os.fsdecode(event.dest_path)), source=path, synthetic=event.is_synthetic
        )
    kind: EventKind = "closed" if isinstance(event, FileClosedEvent) else "changed"
    return PathEvent(kind, path, synthetic=event.is_synthetic)


class Handoff(FileSystemEventHandler):
    """Forwards watchdog events to `deliver`, called on `loop`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[PathEvent], None]
    ) -> None:
        super().__init__()
        self._loop = loop
        self._deliver = deliver

    def dispatch(self, event: FileSystemEvent) -> None:
        path_event = to_path_event(event)
        if path_event is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, path_event)
        except RuntimeError:  # the loop closed while the observer was stopping
            logger.debug("watch.event_dropped", extra={"path": str(path_event.path)})

"""What became of each file the watcher looked at, and the running totals for metrics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class OutcomeKind(StrEnum):
    OBSERVED = "observed"  # published as `file.observed`
    DUPLICATE = "duplicate"  # the camera saw this content before; nothing published
    IGNORED = "ignored"  # not a camera's media file, or refused for safety (`reason` says why)
    CORRUPT = "corrupt"  # stopped growing but never decoded, too small or too large
    VANISHED = "vanished"  # deleted or moved away before it was complete
    UNCHANGED = "unchanged"  # an event for a file already settled with the same size and mtime
    FAILED = "failed"  # an unexpected error; logged as `watch.path_failed`


@dataclass(frozen=True, slots=True)
class Outcome:
    path: Path
    kind: OutcomeKind
    reason: str | None = None  # ignore/corrupt reason, or the error
    camera_id: str | None = None
    sha256: str | None = None
    entry_id: str | None = None  # the new entry, or for a duplicate the first one


@dataclass(frozen=True, slots=True)
class WatchCounts:
    """Totals since the watcher was made (each file at most once per outcome)."""

    observed: int = 0
    duplicates: int = 0
    corrupt: int = 0
    ignored: int = 0
    vanished: int = 0
    failed: int = 0
    cameras_registered: int = 0

"""Retention's media files: the files of a camera with their events' levels, and deleting files
confined to the camera root (a path that leaves the root or goes through a symlink is refused,
never followed)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.retention_rules import MediaCandidate
from streams.paths import PathOutsideRootError, confine

# Media files older than `:before` with the levels of their events (NULL: an event without one).
_MEDIA_CANDIDATES = """
SELECT m.path, m.captured_at, m.detection_status <> 'pending' AS detected,
       array_agg(e.id IS NOT NULL) AS in_event, array_agg(e.risk_level) AS levels
FROM media_files m
LEFT JOIN event_detections ed ON ed.camera_id = m.camera_id AND ed.file_entry_id = m.entry_id
LEFT JOIN events e ON e.id = ed.event_id
WHERE m.camera_id = :camera AND m.captured_at < :before AND m.path IS NOT NULL
GROUP BY m.id
"""


async def media_candidates(
    conn: AsyncConnection, camera: str, before: datetime
) -> list[MediaCandidate]:
    rows = await conn.execute(text(_MEDIA_CANDIDATES), {"camera": camera, "before": before})
    return [
        MediaCandidate(
            path=str(path),
            captured_at=captured_at,
            levels=frozenset(
                str(level or "unrated")
                for joined, level in zip(in_event, levels, strict=True)
                if joined
            ),
            detected=bool(detected),
        )
        for path, captured_at, detected, in_event, levels in rows
    ]


DELETED, MISSING, REFUSED = "deleted", "missing", "refused"


def media_outcomes(root: Path, paths: Iterable[str], *, delete: bool) -> dict[str, tuple[str, int]]:
    """Each path (relative to `root`) → (deleted, missing or refused, its bytes). Without
    `delete`, nothing is deleted and a file present counts as deleted."""
    base = root.resolve()
    outcomes: dict[str, tuple[str, int]] = {}
    for relative in paths:
        try:
            target = confine(base, relative)
        except PathOutsideRootError:
            outcomes[relative] = (REFUSED, 0)
            continue
        # `confine` resolves symlinks; a path whose resolution differs goes through one.
        if target != base / PurePosixPath(relative.replace("\\", "/")):
            outcomes[relative] = (REFUSED, 0)
            continue
        try:
            if not target.is_file():
                outcomes[relative] = (MISSING, 0)
                continue
            size = target.stat().st_size
            if delete:
                target.unlink()
        except FileNotFoundError:
            outcomes[relative] = (MISSING, 0)
            continue
        outcomes[relative] = (DELETED, size)
    return outcomes

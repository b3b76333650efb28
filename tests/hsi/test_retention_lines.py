"""The summary `hsi retention plan` and `run` print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hsi.app.read_side import retention_lines
from projections.retention import LevelCount, RetentionReport, StreamTrim

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_plan_lines_name_cameras_levels_and_bytes() -> None:
    """A plan lists each camera's own cutoff, the rows per table and per level what goes."""
    report = RetentionReport(
        cutoff=NOW - timedelta(days=30),
        streams=(StreamTrim("hsi:front:files", "1-0", 4),),
        rows={"events": 2, "media_files": 4},
        media_deleted=5,
        cutoffs={"front": NOW - timedelta(days=30), "garage": NOW - timedelta(days=365)},
        levels={
            ("front", "low"): LevelCount(events=2, media_files=3, media_bytes=300),
            ("garage", "none"): LevelCount(media_files=2, media_bytes=20),
        },
        planned=True,
    )
    assert retention_lines(report) == [
        "cutoff 2026-05-02T00:00:00+00:00",
        "cutoff of garage: 2025-06-01T00:00:00+00:00",
        "stream entries to trim: 4",
        "rows to delete from events: 2",
        "rows to delete from media_files: 4",
        "front low: 2 events, 3 media files (300 bytes) to delete",
        "garage none: 0 events, 2 media files (20 bytes) to delete",
        "media files to delete: 5 (320 bytes)",
    ]

"""Pipeline latency percentiles from the projected tables (`GET /api/pipeline/latency`).

Computed from the timestamps the facts carry, as projected, so the answer covers every process
of the installation (not one process's histograms). Per stage, over a recent window:

- `detect`: file observed → detected (`media_files.observed_at` → `detected_at`), per file
  detected in the window;
- `batch`: the event's last file detected → its batch closed (`events.closed_at`, the batch
  clock: the idle or window deadline, or the last file's time for a fast-path or full batch),
  at least 0: how long the event waited in its open batch, mostly the batching policy;
- `analyze`: batch closed → analyzed (`events.analyzed_at`), per event analyzed in the window;
  it includes the batch timer's tick and the analyzer's queue;
- `project`: analyzed → the analysis projected (`projection_checkpoints.applied_at`);
- `end_to_end`: the event's first file observed → its analysis projected (analyzed, when the
  checkpoint is not found).

The timestamps come from different clocks (the watcher's, the stages', PostgreSQL's): keep the
hosts' clocks in sync (NTP) or read small values with care. A replay rewrites the checkpoints,
so right after `hsi replay` the `project` and `end_to_end` figures of the window are too high.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.projector import DEFAULT_PROJECTION
from streams.names import StreamNames, is_camera_id

STAGES: tuple[str, ...] = ("detect", "batch", "analyze", "project")
END_TO_END = "end_to_end"
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)

_SQL = """
WITH recent AS (
    SELECT e.id, e.camera_id, e.closed_at, e.analyzed_at, e.analysis_entry_id
    FROM events e
    WHERE e.analyzed_at >= :since AND e.closed_at IS NOT NULL {event_camera}
),
files AS (
    SELECT r.id, min(m.observed_at) AS first_observed, max(m.detected_at) AS last_detected
    FROM recent r
    JOIN event_detections ed ON ed.event_id = r.id
    JOIN media_files m ON m.camera_id = ed.camera_id AND m.entry_id = ed.file_entry_id
    GROUP BY r.id
),
streams AS (
    SELECT * FROM unnest(CAST(:cameras AS text[]), CAST(:streams AS text[]))
        AS s(camera_id, stream)
),
projected AS (
    SELECT r.id, c.applied_at
    FROM recent r
    JOIN streams s ON s.camera_id = r.camera_id
    JOIN projection_checkpoints c
        ON c.projection = :projection AND c.stream = s.stream AND c.entry_id = r.analysis_entry_id
),
samples AS (
    SELECT 'detect' AS stage, EXTRACT(EPOCH FROM m.detected_at - m.observed_at) AS seconds
    FROM media_files m
    WHERE m.detected_at >= :since AND m.observed_at IS NOT NULL {file_camera}
    UNION ALL
    SELECT 'batch', GREATEST(0, EXTRACT(EPOCH FROM r.closed_at - f.last_detected))
    FROM recent r JOIN files f ON f.id = r.id
    WHERE f.last_detected IS NOT NULL
    UNION ALL
    SELECT 'analyze', EXTRACT(EPOCH FROM r.analyzed_at - r.closed_at)
    FROM recent r
    UNION ALL
    SELECT 'project', EXTRACT(EPOCH FROM p.applied_at - r.analyzed_at)
    FROM recent r JOIN projected p ON p.id = r.id
    UNION ALL
    SELECT 'end_to_end',
           EXTRACT(EPOCH FROM coalesce(p.applied_at, r.analyzed_at) - f.first_observed)
    FROM recent r JOIN files f ON f.id = r.id LEFT JOIN projected p ON p.id = r.id
    WHERE f.first_observed IS NOT NULL
)
SELECT stage, count(*) AS samples,
       percentile_cont(CAST(:quantiles AS float8[]))
           WITHIN GROUP (ORDER BY GREATEST(0, CAST(seconds AS float8))) AS quantile_values
FROM samples
GROUP BY stage
"""


@dataclass(frozen=True)
class Percentiles:
    count: int
    values: tuple[float, ...]  # one per QUANTILES entry; empty when there are no samples

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        for index, quantile in enumerate(QUANTILES):
            value = self.values[index] if index < len(self.values) else None
            out[f"p{round(quantile * 100)}"] = None if value is None else round(value, 3)
        return out


EMPTY = Percentiles(0, ())


def _stream_pairs(names: StreamNames, cameras: Iterable[str]) -> tuple[list[str], list[str]]:
    ids = sorted(c for c in set(cameras) if is_camera_id(c))
    return ids, [names.analyses(c) for c in ids]


async def pipeline_latency(
    conn: AsyncConnection,
    names: StreamNames,
    since: datetime,
    camera_id: str | None = None,
) -> dict[str, Percentiles]:
    """Percentiles (seconds) per stage and `end_to_end` of what happened since `since`."""
    if camera_id is not None:
        cameras = [camera_id]
    else:
        rows = await conn.execute(
            text("SELECT DISTINCT camera_id FROM events WHERE analyzed_at >= :since"),
            {"since": since},
        )
        cameras = [str(row[0]) for row in rows]
    ids, streams = _stream_pairs(names, cameras)
    sql = _SQL.format(
        event_camera="" if camera_id is None else "AND e.camera_id = :camera",
        file_camera="" if camera_id is None else "AND m.camera_id = :camera",
    )
    params: dict[str, Any] = {
        "since": since,
        "cameras": ids,
        "streams": streams,
        "projection": DEFAULT_PROJECTION,
        "quantiles": list(QUANTILES),
    }
    if camera_id is not None:
        params["camera"] = camera_id
    found = {stage: EMPTY for stage in (*STAGES, END_TO_END)}
    for stage, samples, values in await conn.execute(text(sql), params):
        found[str(stage)] = Percentiles(
            int(samples), tuple(float(v) for v in values or () if v is not None)
        )
    return found

"""The projection tables as the projector writes them: columns with their SQL types, conflict keys.

This mirrors `migrations/0002_projections.sql` and `0003_alerts.sql`;
`tests/projections/test_tables.py` checks that they agree, so a migration that changes a
projection table fails the suite until this follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class TableSpec:
    """One projection table: its columns (name → SQL type) and the key its upserts conflict on."""

    name: str
    columns: MappingProxyType[str, str]
    key: tuple[str, ...]

    def type_of(self, column: str) -> str:
        try:
            return self.columns[column]
        except KeyError:
            raise KeyError(f"table {self.name} has no column {column!r}") from None


def _spec(table: str, key: tuple[str, ...], /, **columns: str) -> TableSpec:
    return TableSpec(table, MappingProxyType(dict(columns)), key)


CAMERAS: Final = _spec(
    "cameras",
    ("id",),
    id="text",
    name="text",
    folder="text",
    first_seen="timestamptz",
    last_seen="timestamptz",
    file_count="integer",
    event_count="integer",
    last_event_at="timestamptz",
    status="text",
)

MEDIA_FILES: Final = _spec(
    "media_files",
    ("id",),
    id="uuid",
    camera_id="text",
    entry_id="text",
    path="text",
    sha256="text",
    size="bigint",
    mime="text",
    media_kind="text",
    captured_at="timestamptz",
    capture_source="text",
    observed_at="timestamptz",
    detection_status="text",
    detection_error="text",
    detector="text",
    image_width="integer",
    image_height="integer",
    object_count="integer",
    detected_at="timestamptz",
)

DETECTIONS: Final = _spec(
    "detections",
    ("id",),
    id="uuid",
    camera_id="text",
    detection_entry_id="text",
    object_index="integer",
    file_id="uuid",
    file_entry_id="text",
    path="text",
    label="text",
    confidence="real",
    bbox_x="real",
    bbox_y="real",
    bbox_width="real",
    bbox_height="real",
    image_width="integer",
    image_height="integer",
    detector="text",
    captured_at="timestamptz",
)

EVENTS: Final = _spec(
    "events",
    ("id",),
    id="uuid",
    camera_id="text",
    batch_entry_id="text",
    window_start="timestamptz",
    window_end="timestamptz",
    close_reason="text",
    detection_count="integer",
    object_types="text[]",
    max_confidence="real",
    fast_path="boolean",
    closed_at="timestamptz",
    analysis_status="text",
    analysis_entry_id="text",
    risk_score="integer",
    risk_level="text",
    summary="text",
    reasoning="text",
    analyzer="text",
    model="text",
    prompt_hash="text",
    analysis_latency_ms="real",
    analysis_error="text",
    analyzed_at="timestamptz",
)

EVENT_DETECTIONS: Final = _spec(
    "event_detections",
    ("event_id", "detection_entry_id"),
    event_id="uuid",
    detection_entry_id="text",
    file_entry_id="text",
    camera_id="text",
    position="integer",
)

DEAD_LETTERS: Final = _spec(
    "dead_letters",
    ("camera_id", "dead_entry_id"),
    camera_id="text",
    dead_entry_id="text",
    source_stream="text",
    entry_id="text",
    group_name="text",
    deliveries="integer",
    last_error="text",
    original_type="text",
    dead_at="timestamptz",
)

ALERTS: Final = _spec(
    "alerts",
    ("id",),
    id="uuid",
    camera_id="text",
    entry_id="text",
    event_id="uuid",
    analysis_entry_id="text",
    rule="text",
    channel="text",
    status="text",
    reason="text",
    attempt="integer",
    error="text",
    idempotency_key="text",
    delivered_at="timestamptz",
    recorded_at="timestamptz",
)

CHECKPOINTS: Final = _spec(
    "projection_checkpoints",
    ("projection", "stream", "entry_id"),
    projection="text",
    stream="text",
    entry_id="text",
    applied_at="timestamptz",
)

# Every table of the read side, checkpoints first: the projector's first statement of a
# transaction touches the checkpoints, and a replay's swap locks the tables in this same order.
TABLES: Final[tuple[TableSpec, ...]] = (
    CHECKPOINTS,
    MEDIA_FILES,
    DETECTIONS,
    EVENTS,
    EVENT_DETECTIONS,
    DEAD_LETTERS,
    ALERTS,
    CAMERAS,
)

BY_NAME: Final[MappingProxyType[str, TableSpec]] = MappingProxyType({t.name: t for t in TABLES})

# The order in which a batch's row statements run (after the checkpoints), the same for every
# projector, so that concurrent transactions take their row locks in one order.
WRITE_ORDER: Final[tuple[str, ...]] = tuple(t.name for t in TABLES[1:])


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str, schema: str | None) -> str:
    """`"schema"."table"`, or the bare table (found through the search_path) without a schema."""
    return quote_ident(table) if schema is None else f"{quote_ident(schema)}.{quote_ident(table)}"

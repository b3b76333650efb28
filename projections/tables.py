"""The read side's tables, described once: the projectors write them and the API reads them.

`migrations/0002_projections.sql` and later migrations create them; this metadata describes them
for Python (columns in table order with their types, nullability and defaults, keys and
indexes). `tests/projections/test_tables.py` migrates a fresh schema, reflects it and checks
that both agree, so a migration that changes a projection table fails the suite until this
follows.

The tables carry no schema: they are found through the connection's search_path (each test
pins one schema of its own), or qualified by name where a replay needs two schemas at once.
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Final

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR, UUID
from sqlalchemy.dialects.postgresql.base import PGDialect

metadata = MetaData()


def _ts(name: str, *, nullable: bool = True) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


cameras = Table(
    "cameras",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("folder", Text, nullable=False),
    _ts("first_seen", nullable=False),
    _ts("last_seen", nullable=False),
    Column("file_count", Integer, nullable=False, server_default=text("0")),
    Column("event_count", Integer, nullable=False, server_default=text("0")),
    _ts("last_event_at"),
    Column("status", Text, nullable=False, server_default=text("'active'")),
)

# One row per `file.observed`; the detection columns are filled by `detection.completed/failed`.
media_files = Table(
    "media_files",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),  # uuid5(camera_id, file entry id)
    Column("camera_id", Text, nullable=False),
    Column("entry_id", Text, nullable=False),  # the file.observed entry id
    Column("path", Text),  # relative to the camera root
    Column("sha256", Text),
    Column("size", BigInteger),
    Column("mime", Text),
    Column("media_kind", Text),
    _ts("captured_at"),
    Column("capture_source", Text),
    _ts("observed_at"),
    Column("detection_status", Text, nullable=False, server_default=text("'pending'")),
    Column("detection_error", Text),
    Column("detector", Text),
    Column("image_width", Integer),
    Column("image_height", Integer),
    Column("object_count", Integer),
    _ts("detected_at"),
    UniqueConstraint("camera_id", "entry_id", name="media_files_camera_id_entry_id_key"),
)
Index("media_files_camera_captured_idx", media_files.c.camera_id, media_files.c.captured_at.desc())
Index("media_files_captured_idx", media_files.c.captured_at.desc())
Index("media_files_camera_observed_idx", media_files.c.camera_id, media_files.c.observed_at.desc())

# One row per detected object of a `detection.completed`.
detections = Table(
    "detections",
    metadata,
    # id: uuid5(camera_id, detection entry id, index)
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("detection_entry_id", Text, nullable=False),
    Column("object_index", Integer, nullable=False),
    Column("file_id", UUID(as_uuid=True), nullable=False),  # media_files.id
    Column("file_entry_id", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("confidence", REAL, nullable=False),
    Column("bbox_x", REAL, nullable=False),
    Column("bbox_y", REAL, nullable=False),
    Column("bbox_width", REAL, nullable=False),
    Column("bbox_height", REAL, nullable=False),
    Column("image_width", Integer, nullable=False),
    Column("image_height", Integer, nullable=False),
    Column("detector", Text, nullable=False),
    _ts("captured_at", nullable=False),
    Column("zones", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # A video's object: its sampled frame's time in seconds from the first frame (else NULL).
    Column("frame_seconds", Double),
    UniqueConstraint(
        "camera_id",
        "detection_entry_id",
        "object_index",
        name="detections_camera_id_detection_entry_id_object_index_key",
    ),
)
Index("detections_captured_idx", detections.c.captured_at.desc(), detections.c.id.desc())
Index(
    "detections_camera_captured_idx",
    detections.c.camera_id,
    detections.c.captured_at.desc(),
    detections.c.id.desc(),
)
Index(
    "detections_label_captured_idx",
    detections.c.label,
    detections.c.captured_at.desc(),
    detections.c.id.desc(),
)
Index("detections_file_idx", detections.c.file_id)

# The text search configuration of the stored `events.search` (migrations/0007_search.sql).
SEARCH_INDEX_LANGUAGE: Final = "english"


# An event's full-text search document, in the text search configuration `{config}` (an SQL
# expression of type regconfig): the summary weighs most (A), then the object types and zones
# (B), then the reasoning (C). Every function in it is immutable, as a generated column needs:
# `array_to_tsvector(...)::text` spells the arrays as words (`array_to_string` is only stable),
# after dropping the NULL and empty elements that array_to_tsvector refuses.
SEARCH_DOCUMENT: Final = (
    "setweight(to_tsvector({config}, coalesce(summary, '')), 'A')"
    " || setweight(to_tsvector({config}, array_to_tsvector("
    "array_remove(array_remove(object_types || zones, NULL), ''))::text), 'B')"
    " || setweight(to_tsvector({config}, coalesce(reasoning, '')), 'C')"
)


# One row per `batch.closed`; the analysis columns are filled by `analysis.completed/failed`.
events = Table(
    "events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),  # the batch id
    Column("camera_id", Text, nullable=False),
    Column("batch_entry_id", Text),
    _ts("window_start"),
    _ts("window_end"),
    Column("close_reason", Text),
    Column("detection_count", Integer),
    Column("object_types", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("max_confidence", REAL),
    Column("fast_path", Boolean),
    _ts("closed_at"),
    Column("analysis_status", Text, nullable=False, server_default=text("'pending'")),
    Column("analysis_entry_id", Text),
    Column("risk_score", Integer),
    Column("risk_level", Text),
    Column("summary", Text),
    Column("reasoning", Text),
    Column("analyzer", Text),
    Column("model", Text),
    Column("prompt_hash", Text),
    Column("analysis_latency_ms", REAL),
    Column("analysis_error", Text),
    _ts("analyzed_at"),
    Column("zones", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # Generated by PostgreSQL from the columns above: the projector never writes it.
    Column(
        "search",
        TSVECTOR,
        Computed(
            SEARCH_DOCUMENT.format(config=f"'{SEARCH_INDEX_LANGUAGE}'::regconfig"), persisted=True
        ),
    ),
)
Index("events_window_idx", events.c.window_start.desc(), events.c.id.desc())
Index(
    "events_camera_window_idx", events.c.camera_id, events.c.window_start.desc(), events.c.id.desc()
)
Index(
    "events_level_window_idx", events.c.risk_level, events.c.window_start.desc(), events.c.id.desc()
)
Index("events_score_idx", events.c.risk_score)
Index("events_object_types_idx", events.c.object_types, postgresql_using="gin")
Index("events_zones_idx", events.c.zones, postgresql_using="gin")
Index("events_search_idx", events.c.search, postgresql_using="gin")

# The detections entries (files) of each event, in batch order.
event_detections = Table(
    "event_detections",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("detection_entry_id", Text, primary_key=True),
    Column("file_entry_id", Text, nullable=False),
    Column("camera_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
)
Index(
    "event_detections_detection_idx",
    event_detections.c.camera_id,
    event_detections.c.detection_entry_id,
)

# One row per `entry.dead`.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("camera_id", Text, primary_key=True),
    Column("dead_entry_id", Text, primary_key=True),  # the entry id on the dead stream
    Column("source_stream", Text, nullable=False),
    Column("entry_id", Text, nullable=False),
    Column("group_name", Text, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("original_type", Text),
    _ts("dead_at", nullable=False),
)
Index("dead_letters_dead_at_idx", dead_letters.c.dead_at.desc())

# One row per `alert.sent` / `alert.failed` / `alert.skipped` on the cameras' alerts streams.
alerts = Table(
    "alerts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),  # uuid5(camera_id, alert entry id)
    Column("camera_id", Text, nullable=False),
    Column("entry_id", Text, nullable=False),  # the alert entry's id on the alerts stream
    Column("event_id", UUID(as_uuid=True), nullable=False),  # events.id
    Column("analysis_entry_id", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("channel", Text, nullable=False),  # webhook | email | mqtt
    Column("status", Text, nullable=False),  # sent | failed | skipped
    Column("reason", Text),  # failed: delivery_error | outcome_unknown; skipped: too_old
    Column("attempt", Integer, nullable=False),
    Column("error", Text),
    Column("idempotency_key", Text, nullable=False),
    _ts("delivered_at"),  # sent: when the channel confirmed
    _ts("recorded_at", nullable=False),  # when the outcome was known (sent or failed)
    UniqueConstraint("camera_id", "entry_id", name="alerts_camera_id_entry_id_key"),
)
Index("alerts_recorded_idx", alerts.c.recorded_at.desc(), alerts.c.id.desc())
Index(
    "alerts_camera_recorded_idx",
    alerts.c.camera_id,
    alerts.c.recorded_at.desc(),
    alerts.c.id.desc(),
)
Index("alerts_event_idx", alerts.c.event_id, alerts.c.recorded_at.desc())

# Every judgement an event ever had: each `analysis.completed/failed`, adopted ones naming the
# analysis they superseded and the re-analysis run they came from.
analysis_history = Table(
    "analysis_history",
    metadata,
    Column("camera_id", Text, primary_key=True),
    Column("entry_id", Text, primary_key=True),  # the analysis entry id
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False),  # completed | failed
    Column("risk_score", Integer),
    Column("risk_level", Text),
    Column("summary", Text),
    Column("analyzer", Text, nullable=False),
    Column("model", Text),
    Column("prompt_hash", Text),
    Column("supersedes", Text),
    Column("run_id", Text),
    _ts("analyzed_at", nullable=False),
)
Index("analysis_history_event_idx", analysis_history.c.event_id, analysis_history.c.analyzed_at)

# One row per re-analysis run, summed over its cameras' `reanalysis.*` entries.
reanalysis_runs = Table(
    "reanalysis_runs",
    metadata,
    # descriptors are NULL only when retention trimmed the run's `reanalysis.started` entries
    Column("id", Text, primary_key=True),
    Column("analyzer", Text),
    Column("model", Text),
    Column("config_hash", Text),
    Column("selection", Text),
    Column("max_tokens", BigInteger),
    _ts("started_at"),
    Column("cameras", Integer, nullable=False, server_default=text("0")),
    Column("cameras_completed", Integer, nullable=False, server_default=text("0")),
    Column("cameras_cancelled", Integer, nullable=False, server_default=text("0")),
    Column("cameras_over_budget", Integer, nullable=False, server_default=text("0")),
    _ts("ended_at"),
    Column("analyzed", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("prompt_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("completion_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("latency_us", BigInteger, nullable=False, server_default=text("0")),
    Column("adopted", Integer, nullable=False, server_default=text("0")),
    _ts("adopted_at"),
)
Index("reanalysis_runs_started_idx", reanalysis_runs.c.started_at.desc(), reanalysis_runs.c.id)

# The candidate's judgement of each event of a run, beside the one current when it ran.
reanalysis_results = Table(
    "reanalysis_results",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("camera_id", Text, nullable=False),
    Column("entry_id", Text, nullable=False),  # the result's entry id
    Column("batch_entry_id", Text, nullable=False),
    Column("status", Text, nullable=False),  # completed | failed
    Column("current_entry_id", Text),
    Column("current_score", Integer),
    Column("current_level", Text),
    Column("risk_score", Integer),
    Column("risk_level", Text),
    Column("summary", Text),
    Column("reasoning", Text),
    Column("error", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("latency_ms", REAL),
    _ts("analyzed_at", nullable=False),
)
Index("reanalysis_results_event_idx", reanalysis_results.c.event_id)

# Which entries each projection has applied, written in the same transaction as the rows.
checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("projection", Text, primary_key=True),
    Column("stream", Text, primary_key=True),
    Column("entry_id", Text, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

# Every table of the read side, checkpoints first: the projector's first statement of a
# transaction touches the checkpoints, and a replay's swap locks the tables in this same order.
TABLES: Final[tuple[Table, ...]] = (
    checkpoints,
    media_files,
    detections,
    events,
    event_detections,
    dead_letters,
    alerts,
    analysis_history,
    reanalysis_runs,
    reanalysis_results,
    cameras,
)

BY_NAME: Final[MappingProxyType[str, Table]] = MappingProxyType({str(t.name): t for t in TABLES})

# The order in which a batch's row statements run (after the checkpoints), the same for every
# projector, so that concurrent transactions take their row locks in one order.
WRITE_ORDER: Final[tuple[str, ...]] = tuple(str(t.name) for t in TABLES[1:])

# Names leave this module as plain `str` (SQLAlchemy keeps them as a `str` subclass): rows travel
# to PostgreSQL as JSON objects keyed by column, and reports carry table names.
_DIALECT: Final = PGDialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped


@functools.cache
def column_names(table: Table) -> tuple[str, ...]:
    """The table's columns, in table order."""
    return tuple(str(column.name) for column in table.columns)


@functools.cache
def key_of(table: Table) -> tuple[str, ...]:
    """The columns an upsert into `table` conflicts on: its primary key, in column order."""
    return tuple(str(column.name) for column in table.primary_key)


@functools.cache
def sql_type(table: Table, column: str) -> str:
    """The column's PostgreSQL type as DDL spells it (`TIMESTAMP WITH TIME ZONE`)."""
    try:
        found = table.c[column]
    except KeyError:
        raise KeyError(f"table {table.name} has no column {column!r}") from None
    return found.type.compile(dialect=_DIALECT)


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str, schema: str | None) -> str:
    """`"schema"."table"`, or the bare table (found through the search_path) without a schema."""
    return quote_ident(table) if schema is None else f"{quote_ident(schema)}.{quote_ident(table)}"

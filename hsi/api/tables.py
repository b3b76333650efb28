"""SQLAlchemy Core descriptions of the projection tables the API reads (see
`migrations/0002_projections.sql`, which creates them; these only describe columns for queries)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

metadata = MetaData()


def _ts(name: str, *, nullable: bool = True) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


cameras = Table(
    "cameras",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text),
    Column("folder", Text),
    _ts("first_seen"),
    _ts("last_seen"),
    Column("file_count", Integer),
    Column("event_count", Integer),
    _ts("last_event_at"),
    Column("status", Text),
)

media_files = Table(
    "media_files",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("camera_id", Text),
    Column("entry_id", Text),
    Column("path", Text),
    Column("sha256", Text),
    Column("size", BigInteger),
    Column("mime", Text),
    Column("media_kind", Text),
    _ts("captured_at"),
    Column("capture_source", Text),
    _ts("observed_at"),
    Column("detection_status", Text),
    Column("detection_error", Text),
    Column("detector", Text),
    Column("image_width", Integer),
    Column("image_height", Integer),
    Column("object_count", Integer),
    _ts("detected_at"),
)

detections = Table(
    "detections",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("camera_id", Text),
    Column("detection_entry_id", Text),
    Column("object_index", Integer),
    Column("file_id", UUID(as_uuid=True)),
    Column("file_entry_id", Text),
    Column("path", Text),
    Column("label", Text),
    Column("confidence", Float),
    Column("bbox_x", Float),
    Column("bbox_y", Float),
    Column("bbox_width", Float),
    Column("bbox_height", Float),
    Column("image_width", Integer),
    Column("image_height", Integer),
    Column("detector", Text),
    _ts("captured_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("camera_id", Text),
    Column("batch_entry_id", Text),
    _ts("window_start"),
    _ts("window_end"),
    Column("close_reason", Text),
    Column("detection_count", Integer),
    Column("object_types", ARRAY(Text)),
    Column("max_confidence", Float),
    Column("fast_path", Boolean),
    _ts("closed_at"),
    Column("analysis_status", Text),
    Column("analysis_entry_id", Text),
    Column("risk_score", Integer),
    Column("risk_level", Text),
    Column("summary", Text),
    Column("reasoning", Text),
    Column("analyzer", Text),
    Column("model", Text),
    Column("prompt_hash", Text),
    Column("analysis_latency_ms", Float),
    Column("analysis_error", Text),
    _ts("analyzed_at"),
)

event_detections = Table(
    "event_detections",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("detection_entry_id", Text, primary_key=True),
    Column("file_entry_id", Text),
    Column("camera_id", Text),
    Column("position", Integer),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("camera_id", Text, primary_key=True),
    Column("dead_entry_id", Text, primary_key=True),
    Column("source_stream", Text),
    Column("entry_id", Text),
    Column("group_name", Text),
    Column("deliveries", Integer),
    Column("last_error", Text),
    Column("original_type", Text),
    _ts("dead_at"),
)

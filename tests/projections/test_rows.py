"""Entry → rows mapping: pure tables, no I/O."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from projections.errors import UnexpectedEntryError
from projections.rows import (
    CAMERAS_SOURCE,
    ENTRY_ROWS,
    WRITES,
    Merge,
    RowOp,
    original_type,
    rows_for,
)
from projections.upserts import plan
from streams.envelope import DATA_FIELD, entry_fields
from streams.ids import NAMESPACE, detection_id, event_id, media_file_id
from streams.names import StreamKind
from streams.schemas import Entry
from tests.projections.builders import (
    CAMERA,
    T0,
    analysis_completed,
    analysis_failed,
    at,
    batch_closed,
    camera_registered,
    detected,
    detection_completed,
    detection_failed,
    entry_dead,
    file_observed,
)

FILE = file_observed(1)
DETECTION = detection_completed(FILE, "10-0", [detected("person", 0.9), detected("car", 0.5)])
EMPTY = detection_completed(FILE, "10-0", [])
BATCH_ID = str(uuid.UUID(int=42))
BATCH = batch_closed(BATCH_ID, [("20-0", DETECTION), ("20-1", EMPTY)])
ORIGINAL = entry_fields(FILE)[DATA_FIELD]

Expected = list[tuple[str, dict[str, Any], dict[str, Merge]]]

CASES: list[tuple[str, str, Entry, Expected]] = [
    (
        "camera.registered",
        CAMERAS_SOURCE,
        camera_registered(),
        [
            (
                "cameras",
                {"id": CAMERA, "name": "Front Door", "folder": "Front Door", "first_seen": T0},
                {"name": Merge.SET, "first_seen": Merge.LEAST, "last_seen": Merge.GREATEST},
            )
        ],
    ),
    (
        "file.observed",
        StreamKind.FILES,
        FILE,
        [
            (
                "media_files",
                {
                    "id": media_file_id(CAMERA, "1-0"),
                    "entry_id": "1-0",
                    "path": FILE.path,
                    "size": 1000,
                    "capture_source": "filename",
                },
                {"path": Merge.SET},
            ),
            (
                "cameras",
                {"id": CAMERA, "name": CAMERA, "file_count": 1, "last_seen": FILE.observed_at},
                {"name": Merge.KEEP, "file_count": Merge.ADD, "first_seen": Merge.LEAST},
            ),
        ],
    ),
    (
        "detection.completed",
        StreamKind.DETECTIONS,
        DETECTION,
        [
            (
                "media_files",
                {
                    "id": media_file_id(CAMERA, "10-0"),
                    "entry_id": "10-0",
                    "detection_status": "completed",
                    "object_count": 2,
                    "image_width": 640,
                    "detection_error": None,
                },
                {"path": Merge.FILL, "captured_at": Merge.FILL, "detection_status": Merge.SET},
            ),
            (
                "detections",
                {
                    "id": detection_id(CAMERA, "1-0", 0),
                    "object_index": 0,
                    "file_id": media_file_id(CAMERA, "10-0"),
                    "label": "person",
                    "bbox_height": 40.25,
                },
                {},
            ),
            ("detections", {"id": detection_id(CAMERA, "1-0", 1), "label": "car"}, {}),
        ],
    ),
    (
        "detection.completed, nothing found",
        StreamKind.DETECTIONS,
        EMPTY,
        [("media_files", {"detection_status": "completed", "object_count": 0}, {})],
    ),
    (
        "detection.failed",
        StreamKind.DETECTIONS,
        detection_failed(FILE, "10-0"),
        [
            (
                "media_files",
                {
                    "detection_status": "failed",
                    "detection_error": "cannot identify image file",
                    "object_count": None,
                    "media_kind": None,
                },
                {"media_kind": Merge.FILL},
            )
        ],
    ),
    (
        "batch.closed",
        StreamKind.BATCHES,
        BATCH,
        [
            (
                "events",
                {
                    "id": uuid.UUID(int=42),
                    "batch_entry_id": "1-0",
                    "object_types": ["car", "person"],
                    "detection_count": 2,
                    "window_start": FILE.captured_at,
                },
                {},
            ),
            ("event_detections", {"detection_entry_id": "20-0", "position": 0}, {}),
            ("event_detections", {"detection_entry_id": "20-1", "position": 1}, {}),
            (
                "cameras",
                {"event_count": 1, "last_event_at": BATCH.window_start, "name": CAMERA},
                {"event_count": Merge.ADD, "last_event_at": Merge.GREATEST},
            ),
        ],
    ),
    (
        "analysis.completed",
        StreamKind.ANALYSES,
        analysis_completed(BATCH, "30-0", score=77),
        [
            (
                "events",
                {
                    "id": uuid.UUID(int=42),
                    "analysis_status": "completed",
                    "analysis_entry_id": "1-0",
                    "risk_score": 77,
                    "risk_level": "high",
                    "analysis_error": None,
                },
                {},
            ),
            (
                "analysis_history",
                {
                    "camera_id": CAMERA,
                    "entry_id": "1-0",
                    "event_id": uuid.UUID(int=42),
                    "status": "completed",
                    "risk_score": 77,
                    "supersedes": None,
                    "run_id": None,
                },
                {},
            ),
        ],
    ),
    (
        "analysis.failed",
        StreamKind.ANALYSES,
        analysis_failed(BATCH, "30-0"),
        [
            (
                "events",
                {
                    "analysis_status": "failed",
                    "risk_score": None,
                    "analysis_error": "no JSON in the answer",
                },
                {},
            ),
            (
                "analysis_history",
                {"status": "failed", "risk_score": None, "summary": "no JSON in the answer"},
                {},
            ),
        ],
    ),
    (
        "entry.dead",
        StreamKind.DEAD,
        entry_dead("hsi:{front_door}:files", "5-0", ORIGINAL),
        [
            (
                "dead_letters",
                {
                    "camera_id": CAMERA,
                    "dead_entry_id": "1-0",
                    "entry_id": "5-0",
                    "group_name": "detect",
                    "original_type": "file.observed",
                },
                {},
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("kind", "entry", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_entry_maps_to_row_upserts(kind: str, entry: Entry, expected: Expected) -> None:
    """Each entry type upserts its own columns of its rows, merged as the table says."""
    ops = rows_for(kind, CAMERA, "1-0", entry)
    assert [op.table for op in ops] == [table for table, _, _ in expected]
    for op, (_, values, merges) in zip(ops, expected, strict=True):
        assert {k: op.values[k] for k in values} == values
        assert {k: op.merge_of(k) for k in merges} == merges


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (DETECTION, detection_failed(FILE, "10-0")),
        (analysis_completed(BATCH, "30-0"), analysis_failed(BATCH, "30-0")),
    ],
    ids=["detections", "analyses"],
)
def test_outcomes_of_one_stream_write_the_same_columns(first: Entry, second: Entry) -> None:
    """A later outcome of the same file or batch replaces every column of the earlier one."""
    kind = StreamKind.DETECTIONS if first.type.startswith("detection") else StreamKind.ANALYSES
    a, b = rows_for(kind, CAMERA, "1-0", first)[0], rows_for(kind, CAMERA, "2-0", second)[0]
    assert list(a.values) == list(b.values)
    statements = plan([a, b])
    assert len(statements) == 1
    assert len(statements[0].rows) == 1


@pytest.mark.parametrize(
    ("kind", "entry"),
    [
        (StreamKind.FILES, camera_registered()),
        (CAMERAS_SOURCE, FILE),
        (StreamKind.DEAD, DETECTION),
        (StreamKind.ALERTS, FILE),
    ],
)
def test_entry_on_a_foreign_stream_is_refused(kind: str, entry: Entry) -> None:
    """An entry type its stream does not carry cannot be projected."""
    with pytest.raises(UnexpectedEntryError):
        rows_for(kind, CAMERA, "1-0", entry)


def test_ids_are_derived_from_the_entry() -> None:
    """Row ids are uuid5 of camera and entry id (and object index): a rebuild finds them again."""
    assert media_file_id(CAMERA, "1-0") == uuid.uuid5(NAMESPACE, "front_door/1-0")
    assert detection_id(CAMERA, "1-0", 2) == uuid.uuid5(NAMESPACE, "front_door/1-0/2")
    assert media_file_id("garage", "1-0") != media_file_id(CAMERA, "1-0")


@pytest.mark.parametrize(
    ("batch_id", "expected"),
    [
        (BATCH_ID, uuid.UUID(int=42)),
        ("not-a-uuid", uuid.uuid5(NAMESPACE, "front_door/batch/not-a-uuid")),
    ],
)
def test_event_id_is_the_batch_id(batch_id: str, expected: uuid.UUID) -> None:
    """An event's id is its batch id; a batch id that is no UUID is hashed into one."""
    assert event_id(CAMERA, batch_id) == expected


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        (base64.b64encode(ORIGINAL).decode(), "file.observed"),
        (None, None),
        ("***not base64***", None),
        (base64.b64encode(b"\x00garbage").decode(), None),
        (
            base64.b64encode(
                entry_fields(FILE)[DATA_FIELD].replace(b'"file.observed"', b'"file.unknown"')
            ).decode(),
            None,
        ),
    ],
    ids=["envelope", "deleted", "not-base64", "not-an-envelope", "unknown-type"],
)
def test_dead_letter_original_type(original: str | None, expected: str | None) -> None:
    """The original's type is read from its base64 envelope when it names a known type."""
    assert original_type(original) == expected


def test_row_op_refuses_unknown_columns() -> None:
    """A typo in a column name fails when planned, not in PostgreSQL."""
    with pytest.raises(KeyError, match="no column"):
        plan([RowOp("cameras", {"id": CAMERA, "nmae": "x"})])
    with pytest.raises(KeyError, match="no column"):
        plan([RowOp("cameras", {"id": CAMERA}, {"nmae": Merge.KEEP})])
    with pytest.raises(ValueError, match="lacks key"):
        plan([RowOp("events", {"camera_id": CAMERA})])
    with pytest.raises(ValueError, match="not a projection table"):
        plan([RowOp("evnets", {"id": CAMERA})])


def test_times_keep_their_zone() -> None:
    """Timestamps pass through unchanged (aware datetimes)."""
    op = rows_for(StreamKind.FILES, CAMERA, "1-0", file_observed(3, captured=at(3)))[0]
    assert op.values["captured_at"] == at(3)
    assert op.values["captured_at"].tzinfo is not None


def test_zones_go_to_the_detection_rows_and_their_union_to_the_event() -> None:
    """Each detected object's zones are on its row; the event holds every zone of its objects,
    sorted, so that events can be filtered by zone."""
    porch = detected("person", 0.9).model_copy(update={"zones": ("porch", "drive")})
    lawn = detected("cat", 0.8).model_copy(update={"zones": ("lawn",)})
    found = detection_completed(FILE, "10-0", [porch, lawn, detected("car", 0.5)])
    rows = rows_for(StreamKind.DETECTIONS, CAMERA, "20-0", found)
    assert [r.values["zones"] for r in rows if r.table == "detections"] == [
        ["porch", "drive"],
        ["lawn"],
        [],
    ]
    closed = batch_closed(BATCH_ID, [("20-0", found), ("20-1", EMPTY)])
    (event,) = [
        r for r in rows_for(StreamKind.BATCHES, CAMERA, "30-0", closed) if r.table == "events"
    ]
    assert event.values["zones"] == ["drive", "lawn", "porch"]


def test_a_video_objects_frame_time_goes_to_its_detection_row() -> None:
    """A video object's sampled-frame time is on its row; an older entry without it reads as
    no time (NULL)."""
    seen = detected("person", 0.9).model_copy(update={"frame_seconds": 2.0})
    found = detection_completed(FILE, "10-0", [seen, detected("car", 0.5)])
    rows = rows_for(StreamKind.DETECTIONS, CAMERA, "20-0", found)
    assert [r.values["frame_seconds"] for r in rows if r.table == "detections"] == [2.0, None]


@pytest.mark.parametrize(("kind", "entry"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_entries_write_the_tables_their_stream_is_said_to(kind: str, entry: Entry) -> None:
    """`WRITES` names every table an entry writes (a rebuild's bulk load writes a table's rows once
    no later stream writes it), and a row of `ENTRY_ROWS` is keyed by its own entry's id."""
    ops = rows_for(kind, CAMERA, "1-0", entry)
    assert {op.table for op in ops} <= WRITES[kind]
    for op in ops:
        if op.table in ENTRY_ROWS:
            assert "1-0" in op.values.values()

"""Planning upserts into statements: pure tables, no I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from projections.rows import Merge, RowOp, rows_for
from projections.upserts import (
    FinalRows,
    Statement,
    column_default,
    combine,
    fold,
    plan,
    rows_json,
    upsert_sql,
)
from streams.names import StreamKind
from tests.projections.builders import CAMERA, at, detection_completed, file_observed


@pytest.mark.parametrize(
    ("old", "new", "merge", "expected"),
    [
        (1, 2, Merge.SET, 2),
        (1, None, Merge.SET, None),
        (None, 2, Merge.FILL, 2),
        (1, 2, Merge.FILL, 1),
        (1, 2, Merge.KEEP, 1),
        (1, 2, Merge.ADD, 3),
        (None, 2, Merge.ADD, 2),
        (3, 2, Merge.LEAST, 2),
        (None, 2, Merge.LEAST, 2),
        (3, None, Merge.LEAST, 3),
        (3, 2, Merge.GREATEST, 3),
        (None, 2, Merge.GREATEST, 2),
    ],
)
def test_combine_matches_applying_both(old: Any, new: Any, merge: Merge, expected: Any) -> None:
    """Two upserts of one row combine into one with the same effect, merge by merge."""
    assert combine(old, new, merge) == expected


def _files(*numbers: int) -> list[RowOp]:
    return [
        op for n in numbers for op in rows_for(StreamKind.FILES, CAMERA, f"{n}-0", file_observed(n))
    ]


def test_plan_makes_one_statement_per_table() -> None:
    """Many files: one media_files statement, one cameras row with the counts summed."""
    statements = plan(_files(3, 1, 2))
    assert [s.table for s in statements] == ["media_files", "cameras"]
    assert len(statements[0].rows) == 3
    cameras = dict(zip(statements[1].columns, statements[1].rows[0], strict=True))
    assert cameras["file_count"] == 3
    assert cameras["first_seen"] == file_observed(1).observed_at
    assert cameras["last_seen"] == file_observed(3).observed_at


def test_plan_sorts_rows_by_key() -> None:
    """Rows are sorted by key, so concurrent projectors lock them in one order."""
    statement = plan(_files(3, 1, 2))[0]
    keys = [str(row[0]) for row in statement.rows]
    assert keys == sorted(keys)


def test_plan_cuts_where_column_sets_change_for_a_row() -> None:
    """A row upserted with another column set starts a new statement: order is kept."""
    file = file_observed(1)
    detection = rows_for(
        StreamKind.DETECTIONS, CAMERA, "5-0", detection_completed(file, "1-0", [])
    )[0]
    observed = _files(1)[0]
    statements = plan([detection, observed])
    assert [(s.table, s.merges[s.columns.index("path")]) for s in statements] == [
        ("media_files", Merge.FILL),
        ("media_files", Merge.SET),
    ]


def test_plan_of_nothing_is_nothing() -> None:
    """No upserts, no statements."""
    assert plan([]) == []


def test_upsert_sql_merges_each_column_its_way() -> None:
    """SET, FILL, ADD, LEAST, GREATEST become their SQL; KEEP columns are not updated."""
    statement = plan(_files(1))[1]
    sql = upsert_sql(statement, "s1")
    assert sql.startswith('INSERT INTO "s1"."cameras" AS t ("id", "name", "folder",')
    assert 'ON CONFLICT ("id") DO UPDATE SET' in sql
    assert '"file_count" = t."file_count" + EXCLUDED."file_count"' in sql
    assert '"first_seen" = LEAST(t."first_seen", EXCLUDED."first_seen")' in sql
    assert '"last_seen" = GREATEST(t."last_seen", EXCLUDED."last_seen")' in sql
    assert '"name" =' not in sql
    detection = rows_for(
        StreamKind.DETECTIONS, CAMERA, "5-0", detection_completed(file_observed(1), "1-0", [])
    )[0]
    sql = upsert_sql(plan([detection])[0])
    assert sql.startswith('INSERT INTO "media_files" AS t')
    assert '"path" = COALESCE(t."path", EXCLUDED."path")' in sql
    assert '"detection_status" = EXCLUDED."detection_status"' in sql


def test_upsert_sql_without_columns_to_update_does_nothing() -> None:
    """An upsert of key columns only is an insert that ignores conflicts."""
    statement = Statement("cameras", ("id",), (Merge.SET,), (("a",),))
    assert upsert_sql(statement).endswith('ON CONFLICT ("id") DO NOTHING')


def test_rows_json_replaces_nul_characters() -> None:
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD, the same way every time."""
    statement = Statement(
        "events",
        ("id", "summary", "window_start"),
        (Merge.SET,) * 3,
        (("00000000-0000-0000-0000-000000000001", "a\x00b", at(0)),),
    )
    assert orjson.loads(rows_json(statement)) == [
        {
            "id": "00000000-0000-0000-0000-000000000001",
            "summary": "a\ufffdb",
            "window_start": "2026-01-01T12:00:00+00:00",
        }
    ]


def test_fold_changes_a_row_as_the_upsert_would() -> None:
    """A detection first creates the file's row; the file's entry then SETs what the detection
    only FILLed, and leaves the detection's columns alone."""
    file = file_observed(1)
    detection = rows_for(
        StreamKind.DETECTIONS, CAMERA, "5-0", detection_completed(file, "1-0", [])
    )[0]
    observed = _files(1)[0]
    row = fold(fold(None, detection), observed)
    assert row["size"] == file.size
    assert row["detection_status"] == "completed"
    assert row["path"] == observed.values["path"]
    assert fold(row, detection) == row  # FILL keeps the file's values, SET rewrites the same


def test_fold_merges_into_defaults_and_keeps_absent_keep_columns() -> None:
    """A column no upsert gave holds its default: ADD counts from 0; a KEEP column stays absent
    (its default) when the row already exists."""
    ended = RowOp(
        "reanalysis_runs",
        {"id": "r", "cameras_completed": 1, "ended_at": at(9)},
        {"cameras_completed": Merge.ADD, "ended_at": Merge.GREATEST},
    )
    started = RowOp("reanalysis_runs", {"id": "r", "cameras": 1}, {"cameras": Merge.ADD})
    row = fold(fold(fold(None, ended), started), started)
    assert (row["cameras"], row["cameras_completed"]) == (2, 1)
    assert column_default("reanalysis_runs", "cameras") == 0
    assert column_default("events", "zones") == []
    assert column_default("media_files", "detection_status") == "pending"
    placeholder = RowOp("cameras", {"id": "c", "status": "x"}, {"status": Merge.KEEP})
    assert "status" not in fold({"id": "c"}, placeholder)


def test_final_rows_sum_a_camera_and_group_rows_by_columns() -> None:
    """Many files: one camera row with the counts summed (as `plan` makes it), media rows
    grouped by the columns they hold."""
    rows = FinalRows()
    rows.add(_files(3, 1, 2))
    rows.add(
        rows_for(StreamKind.DETECTIONS, CAMERA, "5-0", detection_completed(file_observed(1), "1-0"))
    )
    assert rows.count(["media_files", "cameras"]) == 4
    taken = {(t.table, len(t.rows)): t for t in rows.take(["media_files", "cameras"])}
    assert set(taken) == {("media_files", 2), ("media_files", 1), ("cameras", 1)}
    (camera,) = taken[("cameras", 1)].rows
    planned = plan(_files(3, 1, 2))[1]
    assert dict(zip(taken[("cameras", 1)].columns, camera, strict=True)) == dict(
        zip(planned.columns, planned.rows[0], strict=True)
    )
    assert rows.take(["media_files"]) == []

"""What the System and Charts pages make of /ready, the streams and the latency answer."""

from __future__ import annotations

from typing import Any

import pytest

from hsi.api.queries.streams import GroupHealth, StreamHealth
from hsi.web.health import (
    Answer,
    Check,
    StageLag,
    StageLatency,
    flatten,
    lag_by_stage,
    latency_rows,
    readiness_rows,
)
from streams.names import StreamKind

READY = {
    "status": "not_ready",
    "checks": {
        "redis": {"ok": True, "version": "8.0.2"},
        "postgres": {"ok": True},
        "migrations": {"ok": False, "pending": ["0003_more.sql"]},
        "projector": {"ok": True, "behind": 3, "max_behind": 10000, "cameras": 2},
    },
}


@pytest.mark.parametrize(
    ("answer", "rows"),
    [
        (
            Answer(503, READY),
            [
                Check("Redis", True, "version 8.0.2"),
                Check("PostgreSQL", True, "answers"),
                Check("Migrations", False, "pending: 0003_more.sql"),
                Check("Projector", True, "3 entries behind (at most 10000), 2 camera(s)"),
            ],
        ),
        (
            Answer(503, {"checks": {"redis": {"ok": False, "error": "ConnectionError"}}}),
            [
                Check("Redis", False, "unavailable (ConnectionError)"),
                Check("PostgreSQL", None, "not checked (the server could not tell)"),
                Check("Migrations", None, "not checked (the server could not tell)"),
                Check("Projector", None, "not checked (the server could not tell)"),
            ],
        ),
        (
            Answer(0),
            [
                Check(n, None, "not checked (the server could not tell)")
                for n in ("Redis", "PostgreSQL", "Migrations", "Projector")
            ],
        ),
    ],
)
def test_ready_becomes_one_row_per_component(answer: Answer, rows: list[Check]) -> None:
    """Each /ready check is a row with its state and a readable detail; missing ones unknown."""
    assert readiness_rows(answer) == rows


def _stream(camera: str, kind: StreamKind, *groups: GroupHealth) -> StreamHealth:
    return StreamHealth(camera, kind, f"k:{camera}:{kind}", True, 10, None, None, groups)


def test_lag_is_summed_per_group_and_stream_in_pipeline_order() -> None:
    """Lag and pending add up over cameras; a lag Redis cannot tell is counted apart."""
    health = [
        _stream("b", StreamKind.BATCHES, GroupHealth("analyze", 1, 2, 5, None)),
        _stream("a", StreamKind.FILES, GroupHealth("detect", 1, 1, 4, None)),
        _stream("b", StreamKind.FILES, GroupHealth("detect", 1, 0, None, None)),
        _stream("a", StreamKind.BATCHES, GroupHealth("analyze", 1, 0, 1, None)),
    ]
    assert lag_by_stage(health) == [
        StageLag("detect (files)", 4, 1, 1),
        StageLag("analyze (batches)", 6, 2, 0),
    ]


LATENCY: dict[str, Any] = {
    "stages": {
        "detect": {"count": 3, "p50": 0.25, "p95": 0.5, "p99": 0.5},
        "batch": {"count": 0, "p50": None, "p95": None, "p99": None},
    },
    "end_to_end": {"count": 3, "p50": 1.5, "p95": 2, "p99": 2},
}


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (
            LATENCY,
            [
                StageLatency("detect", 3, 0.25, 0.5, 0.5),
                StageLatency("batch", 0, None, None, None),
                StageLatency("end to end", 3, 1.5, 2.0, 2.0),
            ],
        ),
        ({"something": "else"}, None),
        (None, None),
    ],
)
def test_latency_rows_per_stage_then_end_to_end(body: Any, rows: list[StageLatency] | None) -> None:
    """/api/pipeline/latency is read stage by stage; another shape is left to `flatten`."""
    assert latency_rows(body) == rows


def test_any_json_flattens_to_named_rows() -> None:
    """An answer of unknown shape is still shown: dotted names, list items by their name."""
    body = {"a": {"b": 1.23456, "c": None}, "items": [{"stage": "detect", "p": 2}, 5], "ok": True}
    assert flatten(body) == [
        ("a.b", "1.235"),
        ("a.c", "–"),
        ("items[detect].stage", "detect"),
        ("items[detect].p", "2"),
        ("items[1]", "5"),
        ("ok", "True"),
    ]

"""Query-parameter parsing: pure functions, each refusal naming its parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hsi.api.params import (
    Query,
    parse_camera_id,
    parse_choices,
    parse_datetime,
    parse_float,
    parse_int,
    parse_labels,
    parse_limit,
    parse_time_range,
)
from hsi.api.responses import BadParameter


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 50), ("1", 1), ("100", 100), (" 20 ", 20)],
)
def test_limit_accepts_1_to_100(value: str | None, expected: int) -> None:
    """limit defaults to 50 and accepts 1–100."""
    assert parse_limit(value) == expected


@pytest.mark.parametrize("value", ["0", "101", "-1", "ten", "", "1.5", "1e3", "9" * 30])
def test_limit_refuses_others(value: str) -> None:
    """Anything else is a 400 naming `limit`."""
    with pytest.raises(BadParameter) as caught:
        parse_limit(value)
    assert caught.value.parameter == "limit"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026-01-31T12:00:00", datetime(2026, 1, 31, 12, tzinfo=UTC)),
        (
            "2026-01-31T12:00:00+02:00",
            datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=2))),
        ),
        # an unencoded `+` arrives as a space
        (
            "2026-01-31T12:00:00 02:00",
            datetime(2026, 1, 31, 12, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T12:00:00.123456Z", datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_datetime_reads_iso_8601_naive_as_utc(value: str, expected: datetime) -> None:
    """ISO 8601 times parse; without an offset they are UTC."""
    assert parse_datetime("since", value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "12:00", "", "1700000000"])
def test_datetime_refuses_non_iso(value: str) -> None:
    """A time that is not ISO 8601 is a 400 naming the parameter."""
    with pytest.raises(BadParameter) as caught:
        parse_datetime("until", value)
    assert caught.value.parameter == "until"


def test_time_range_must_move_forward() -> None:
    """until must be later than since."""
    with pytest.raises(BadParameter) as caught:
        parse_time_range("2026-01-02", "2026-01-01")
    assert caught.value.parameter == "until"
    assert parse_time_range(None, "2026-01-01").since is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [("0", True), ("100", True), ("55", True), ("101", False), ("-1", False), ("x", False)],
)
def test_score_range(value: str, ok: bool) -> None:
    """min_score accepts integers 0–100."""
    if ok:
        assert parse_int("min_score", value, 0, 100) == int(value)
    else:
        with pytest.raises(BadParameter, match="min_score"):
            parse_int("min_score", value, 0, 100)


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1", "1.1", "high"])
def test_confidence_refuses_out_of_range(value: str) -> None:
    """min_confidence is a finite number 0–1."""
    with pytest.raises(BadParameter, match="min_confidence"):
        parse_float("min_confidence", value, 0.0, 1.0)


def test_choices_keep_order_and_refuse_unknown() -> None:
    """Repeated choices are deduplicated; an unknown one names the parameter."""
    levels = ("low", "medium", "high", "critical")
    assert parse_choices("risk_level", ["high", "low", "high"], levels) == ("high", "low")
    with pytest.raises(BadParameter) as caught:
        parse_choices("risk_level", ["severe"], levels)
    assert caught.value.parameter == "risk_level"


def test_query_lists_repeat_and_commas() -> None:
    """List parameters may repeat and may be comma separated."""
    query = Query([("risk_level", "high,critical"), ("risk_level", "low")], {"risk_level"})
    assert query.get_list("risk_level") == ["high", "critical", "low"]


def test_query_refuses_unknown_and_repeated_parameters() -> None:
    """An undeclared parameter, or a single-valued one given twice, is a 400 naming it."""
    with pytest.raises(BadParameter) as caught:
        Query([("risk", "high")], {"risk_level"})
    assert caught.value.parameter == "risk"
    query = Query([("limit", "1"), ("limit", "2")], {"limit"})
    with pytest.raises(BadParameter) as repeated:
        query.get("limit")
    assert repeated.value.parameter == "limit"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("front_door", True), ("Front Door", False), ("../x", False), ("a" * 65, False)],
)
def test_camera_id(value: str, ok: bool) -> None:
    """camera_id must be a normalized camera id."""
    if ok:
        assert parse_camera_id("camera_id", value) == value
    else:
        with pytest.raises(BadParameter, match="camera_id"):
            parse_camera_id("camera_id", value)


def test_labels_refuse_odd_characters() -> None:
    """Object types are short words."""
    assert parse_labels("label", ["person", "traffic light"]) == ("person", "traffic light")
    with pytest.raises(BadParameter, match="label"):
        parse_labels("label", ["per%son"])

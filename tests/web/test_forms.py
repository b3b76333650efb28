"""The events filter form: what a GET form sends → the API's filters, and back to links."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest

from hsi.api.queries.events import EventFilters
from hsi.web.forms import EventForm, parse_event_form

BERLIN = ZoneInfo("Europe/Berlin")
EMPTY_FORM = [("camera_id", ""), ("object_type", ""), ("since", ""), ("until", "")]


@pytest.mark.parametrize(
    ("items", "filters"),
    [
        (EMPTY_FORM, EventFilters()),
        (
            [*EMPTY_FORM, ("camera_id", "front_door"), ("risk_level", "high")],
            EventFilters(camera_id="front_door", risk_levels=("high",)),
        ),
        (
            [("risk_level", "high"), ("risk_level", "critical"), ("object_type", " person ")],
            EventFilters(risk_levels=("high", "critical"), object_types=("person",)),
        ),
        (
            [("since", "2026-01-10T13:00"), ("until", "2026-01-10T14:30")],
            EventFilters(
                since=datetime(2026, 1, 10, 12, 0, tzinfo=UTC),
                until=datetime(2026, 1, 10, 13, 30, tzinfo=UTC),
            ),
        ),
        (  # an explicit offset wins over the home's zone
            [("since", "2026-01-10T13:00:00Z")],
            EventFilters(since=datetime(2026, 1, 10, 13, 0, tzinfo=UTC)),
        ),
    ],
)
def test_the_form_becomes_the_apis_filters(
    items: list[tuple[str, str]], filters: EventFilters
) -> None:
    """Empty fields are no filter; times without an offset are in the home's zone."""
    form, found = parse_event_form(items, BERLIN)
    assert form.errors == {}
    assert found == filters


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([("camera_id", "Front Door")], "camera_id"),
        ([("risk_level", "severe")], "risk_level"),
        ([("object_type", "<script>")], "object_type"),
        ([("since", "yesterday")], "since"),
        ([("since", "2026-01-10T13:00"), ("until", "2026-01-10T12:00")], "until"),
    ],
)
def test_a_bad_field_is_reported_and_left_out(items: list[tuple[str, str]], field: str) -> None:
    """A value the API would refuse becomes an error on its field, and no filter."""
    form, found = parse_event_form(items, UTC)
    assert set(form.errors) == {field}
    assert getattr(found, "until" if field == "until" else field, None) in (None, ())


def test_links_keep_the_filters_and_add_the_page() -> None:
    """Older/newer links repeat the filters as typed, without empty fields, plus the cursor."""
    form = EventForm(
        camera_id="front_door", risk_levels=("high", "critical"), since="2026-01-10T13:00"
    )
    assert parse_qsl(form.query(cursor="abc")) == [
        ("camera_id", "front_door"),
        ("risk_level", "high"),
        ("risk_level", "critical"),
        ("since", "2026-01-10T13:00"),
        ("cursor", "abc"),
    ]
    assert (
        form.query(before="")
        == "camera_id=front_door&risk_level=high&risk_level=critical&since=2026-01-10T13%3A00"
    )
    assert form.filtered
    assert not EventForm().filtered


def test_a_page_is_either_after_or_before_a_cursor() -> None:
    """When a link carries both, `cursor` (older) wins."""
    form, _ = parse_event_form([("cursor", "a"), ("before", "b")], UTC)
    assert (form.cursor, form.before) == ("a", "")
    form, _ = parse_event_form([("before", "b")], UTC)
    assert (form.cursor, form.before) == ("", "b")

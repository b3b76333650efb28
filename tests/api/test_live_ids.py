"""Live-feed ids and resume positions as pure functions."""

from __future__ import annotations

import pytest

from hsi.api.live import (
    LiveId,
    live_keys,
    merge_in_order,
    parse_live_id,
    resume_positions,
    sse_event,
)
from streams.names import StreamKind, StreamNames

NAMES = StreamNames("hsi")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "front_door|batches|1700000000000-0",
            LiveId("front_door", StreamKind.BATCHES, "1700000000000-0"),
        ),
        ("garage|analyses|5-12", LiveId("garage", StreamKind.ANALYSES, "5-12")),
        ("front_door|files|1-0", None),  # not a live stream
        ("Front Door|batches|1-0", None),
        ("front_door|batches|1", None),
        ("front_door|batches|1-0|x", None),
        ("front_door|batches|$", None),
        ("", None),
    ],
)
def test_parse_live_id(text: str, expected: LiveId | None) -> None:
    """Only `<camera>|batches|<id>` and `<camera>|analyses|<id>` are ours."""
    assert parse_live_id(text) == expected
    if expected is not None:
        assert str(expected) == text


def test_without_an_id_the_feed_starts_at_the_ends() -> None:
    """No resume: each stream starts after its last entry, missing streams at the beginning."""
    keys = live_keys(NAMES, ["a", "b"])
    tails = {NAMES.batches("a"): "100-1"}
    positions = resume_positions(keys, NAMES, tails, None)
    assert positions == {
        NAMES.batches("a"): "100-1",
        NAMES.analyses("a"): "0-0",
        NAMES.batches("b"): "0-0",
        NAMES.analyses("b"): "0-0",
    }


def test_resume_starts_after_the_entry_and_others_at_its_millisecond() -> None:
    """The resumed stream continues after its entry; the others from that millisecond on."""
    keys = live_keys(NAMES, ["a", "b"])
    positions = resume_positions(
        keys, NAMES, {}, LiveId("a", StreamKind.ANALYSES, "1700000000000-3")
    )
    assert positions[NAMES.analyses("a")] == "1700000000000-3"
    assert positions[NAMES.batches("a")] == f"1699999999999-{2**64 - 1}"
    assert positions[NAMES.batches("b")] == f"1699999999999-{2**64 - 1}"


def test_sse_event_frame() -> None:
    """An event is id, event and one data line, ended by a blank line."""
    frame = sse_event(LiveId("a", StreamKind.BATCHES, "1-0"), {"x": "y\nz"})
    assert frame == b'id: a|batches|1-0\nevent: batch\ndata: {"x":"y\\nz"}\n\n'


def test_entries_of_one_reply_go_out_in_id_order() -> None:
    """Entries of several streams are merged by id, not stream by stream."""
    merged = merge_in_order({"a": [("5-0", 1), ("9-0", 2)], "b": [("7-0", 3)]}, count=10)
    assert [(key, entry_id) for key, entry_id, _ in merged] == [
        ("a", "5-0"),
        ("b", "7-0"),
        ("a", "9-0"),
    ]


def test_a_full_stream_holds_back_later_entries_of_others() -> None:
    """When a stream returned `count` entries it may have more older ones than another stream's
    entries: those later entries wait for the next read, so ids never go backwards."""
    merged = merge_in_order(
        {"a": [("1-0", 0), ("2-0", 0)], "b": [("3-0", 0)], "c": [("2-0", 0)]}, count=2
    )
    assert [(key, entry_id) for key, entry_id, _ in merged] == [
        ("a", "1-0"),
        ("a", "2-0"),
        ("c", "2-0"),
    ]

"""`streams.trusted`: entries a process wrote, handed back to its readers, bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from streams import trusted
from streams.envelope import entry_fields_and_headers
from streams.schemas import CameraRegistered

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _entry(number: int) -> CameraRegistered:
    return CameraRegistered(camera_id=f"c{number}", name="n", folder="f", registered_at=NOW)


def test_a_remembered_entry_is_read_without_its_fields() -> None:
    entry = _entry(1)
    fields, headers = entry_fields_and_headers(entry, {"traceparent": "x"})
    trusted.remember("s", "1-0", entry, headers)
    got, got_headers = trusted.read("s", "1-0", {})  # no fields: it was not decoded
    assert got is entry
    assert got_headers == headers
    assert got_headers["traceparent"] == "x"
    # Another stream's entry of the same id is not that one: decoded from its fields.
    other, _ = trusted.read("t", "1-0", fields)
    assert other == entry
    assert other is not entry


def test_only_the_newest_entries_are_kept() -> None:
    trusted.forget()
    for number in range(trusted.SIZE + 1):
        trusted.remember("s", f"{number}-0", _entry(number), {})
    assert trusted.recall("s", "0-0") is None
    assert trusted.recall("s", f"{trusted.SIZE}-0") is not None
    trusted.forget()
    assert trusted.recall("s", f"{trusted.SIZE}-0") is None

"""Stream names, entry schemas and the envelope: the write side's contract."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1

from streams.envelope import DATA_FIELD, decode, encode, entry_fields, read_fields
from streams.names import (
    CameraIdError,
    Group,
    StreamKind,
    StreamNames,
    camera_id,
    is_camera_id,
)
from streams.schemas import (
    SUPPORTED_VERSIONS,
    CameraRegistered,
    EntryDead,
    EntryError,
    FileObserved,
    UnsupportedSchemaError,
    dump_entry,
    load_entry,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Front Door", "front_door"),
        ("front_door", "front_door"),
        ("Garage-2", "garage_2"),
        ("  Back  Yard  ", "back_yard"),
        ("Café Entrée", "cafe_entree"),
        ("CAM#1 (porch)", "cam_1_porch"),
        ("x" * 80, "x" * 64),
    ],
)
def test_camera_id_normalization(folder: str, expected: str) -> None:
    """Folder names become lower-case ASCII ids with single underscores."""
    assert camera_id(folder) == expected


@pytest.mark.parametrize("folder", ["", "   ", "---", "日本"])
def test_camera_id_refuses_names_without_letters(folder: str) -> None:
    """A folder name with nothing usable is refused with a clear error."""
    with pytest.raises(CameraIdError, match="rename the folder"):
        camera_id(folder)


@pytest.mark.parametrize("value", ["front_door\n", "front_door\r", "Front", "_front", ""])
def test_is_camera_id_refuses_anything_but_the_exact_form(value: str) -> None:
    assert not is_camera_id(value)
    assert is_camera_id("front_door")


def test_keys_share_the_camera_hash_tag() -> None:
    """Every key of a camera carries `{camera}` so it lands in one cluster slot."""
    names = StreamNames("hsi")
    keys = [
        names.files("front_door"),
        names.detections("front_door"),
        names.batches("front_door"),
        names.analyses("front_door"),
        names.dead("front_door"),
        names.seen("front_door", "ab" * 32),
        names.open_batch("front_door"),
    ]
    assert all("{front_door}" in key for key in keys)
    assert names.files("front_door") == "hsi:{front_door}:files"
    assert names.parse("hsi:{front_door}:dead") == ("front_door", StreamKind.DEAD)
    assert Group.DETECT == "detect"


def test_keys_refuse_unnormalized_cameras() -> None:
    """A raw folder name cannot slip into a key."""
    with pytest.raises(CameraIdError):
        StreamNames().files("Front Door")


def _file_entry() -> FileObserved:
    return FileObserved(
        camera_id="front_door",
        path="Front Door/MDAlarm_20261128-120000.jpg",
        sha256="ab" * 32,
        size=1234,
        mime="image/jpeg",
        media_kind="image",
        captured_at=NOW,
        capture_source="filename",
        observed_at=NOW,
    )


def test_entry_round_trip() -> None:
    """An entry survives dump and load unchanged."""
    entry = _file_entry()
    assert load_entry(dump_entry(entry)) == entry


def test_newer_schema_version_is_refused() -> None:
    """An entry from a newer HSI is refused with an upgrade hint, never half-read."""
    raw = orjson.loads(dump_entry(_file_entry()))
    raw["schema_version"] = SUPPORTED_VERSIONS["file.observed"] + 1
    with pytest.raises(UnsupportedSchemaError, match="upgrade HSI"):
        load_entry(orjson.dumps(raw))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "file.deleted"}', "unknown entry type"),
        (b'{"type": "camera.registered", "schema_version": 0}', "positive integer"),
        (b'{"type": "camera.registered", "camera_id": "x"}', "camera.registered entry is invalid"),
    ],
)
def test_bad_bodies_are_refused(body: bytes, message: str) -> None:
    """Unreadable bodies give an EntryError that says what is wrong."""
    with pytest.raises(EntryError, match=message):
        load_entry(body)


async def test_envelope_matches_faststream() -> None:
    """Our envelope is byte-identical to FastStream's and parses with its parser."""
    headers = {"correlation_id": "c1", "content-type": "application/json", "type": "x"}
    ours = encode(b'{"a": 1}', headers)
    theirs = await BinaryMessageFormatV1.encode(
        message=b'{"a": 1}', reply_to=None, headers={"type": "x"}, correlation_id="c1"
    )
    body, parsed = decode(ours)
    assert body == b'{"a": 1}'
    assert parsed == headers
    assert decode(theirs)[0] == b'{"a": 1}'
    assert decode(theirs)[1]["type"] == "x"


def test_entry_fields_round_trip_with_headers() -> None:
    """XADD fields carry the entry and its headers (type, traceparent)."""
    entry = CameraRegistered(
        camera_id="front_door", name="Front Door", folder="Front Door", registered_at=NOW
    )
    fields = entry_fields(entry, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    back, headers = read_fields(fields)
    assert back == entry
    assert headers["type"] == "camera.registered"
    assert headers["traceparent"].startswith("00-")


def test_dead_entry_keeps_original_bytes() -> None:
    """A dead letter carries the original envelope so that it can be re-published."""
    original = entry_fields(_file_entry())[DATA_FIELD]
    dead = EntryDead(
        camera_id="front_door",
        source_stream="hsi:{front_door}:files",
        entry_id="1-0",
        group="detect",
        deliveries=5,
        last_error="boom",
        original=base64.b64encode(original).decode(),
        dead_at=NOW,
    )
    restored = base64.b64decode(load_entry(dump_entry(dead)).original or "")
    assert read_fields({DATA_FIELD: restored})[0] == _file_entry()


def test_fields_without_data_are_refused() -> None:
    """A stream entry not written by HSI is refused, not guessed at."""
    with pytest.raises(EntryError, match="__data__"):
        read_fields({b"foo": b"bar"})

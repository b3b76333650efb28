"""The detect stage with zones, on a real photo and a real Redis: an object standing in a `tag`
zone is tagged, one in an `ignore` zone is dropped (and counted), and the entry names the zones
file's version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from streams.detectors import EmbeddedDetector
from streams.envelope import read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import DetectionCompleted
from streams.stages.detect import DetectStage
from streams.watch.watcher import Watcher
from streams.zones import ZoneSet, parse_zones
from tests.observability.support import CAMERA, FAST, put_files

# The astronaut photo's person stands at the bottom of the picture (box to y ≈ 507 of 512).
BOTTOM = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
TOP = [[0, 0], [1, 0], [1, 0.5], [0, 0.5]]


def _zones(*zones: dict[str, Any]) -> ZoneSet:
    return parse_zones({"cameras": {CAMERA: {"zones": list(zones)}}}, version="v1")


async def _detect(redis: Redis, prefix: str, root: Path, zones: ZoneSet) -> DetectionCompleted:
    names = StreamNames(prefix)
    (outcome,) = await Watcher(redis, names, root, FAST).ingest(
        put_files(root, [("person-astronaut.jpg", "a.jpg")])
    )
    assert outcome.entry_id is not None
    stream = names.files(CAMERA)
    await ensure_group(redis, stream, Group.DETECT.value)
    reply: Any = await redis.xreadgroup(Group.DETECT.value, "t", {stream: ">"})
    entries = [(i.decode(), f) for i, f in reply[0][1]]
    detector = EmbeddedDetector(mode="full", confidence_threshold=0.35)
    try:
        stage = DetectStage(
            redis=redis, names=names, detector=detector, camera_root=root, zones=zones
        )
        assert not (await stage.handle(stream, entries)).failed
    finally:
        await detector.aclose()
    ((_, fields),) = await redis.xrange(names.detections(CAMERA))
    entry, _ = read_fields(fields)
    assert isinstance(entry, DetectionCompleted)
    return entry


@pytest.mark.parametrize(
    ("zones", "persons", "tags", "ignored"),
    [
        (_zones({"name": "porch", "points": BOTTOM}), 1, ("porch",), 0),
        (_zones({"name": "sky", "points": TOP}), 1, (), 0),
        (_zones({"name": "street", "kind": "ignore", "points": BOTTOM}), 0, None, 1),
        (
            _zones(
                {"name": "porch", "points": BOTTOM},
                {"name": "lawn", "points": [[0, 0.9], [1, 0.9], [1, 1], [0, 1]]},
            ),
            1,
            ("porch", "lawn"),
            0,
        ),
    ],
)
async def test_zones_tag_or_drop_what_stands_in_them(
    redis_client: Redis,
    key_prefix: str,
    tmp_path: Path,
    zones: ZoneSet,
    persons: int,
    tags: tuple[str, ...] | None,
    ignored: int,
) -> None:
    entry = await _detect(redis_client, key_prefix, tmp_path, zones)
    found = [o for o in entry.objects if o.label == "person"]
    assert len(found) == persons
    if tags is not None:
        assert found[0].zones == tags
    assert entry.ignored == ignored
    assert entry.zones_version == "v1"


async def test_without_zones_nothing_is_tagged(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    entry = await _detect(redis_client, key_prefix, tmp_path, ZoneSet({}))
    assert [o.zones for o in entry.objects if o.label == "person"] == [()]
    assert (entry.zones_version, entry.ignored) == (None, 0)

"""The detect stage in motion mode on real pictures and a real Redis: a person too small for the
full-frame pass is found in the crop around what changed since the camera's previous upload, and a
file detected again (crash, reclaim) is compared with the same previous file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from redis.asyncio import Redis

from streams.contract import StreamEntry
from streams.detectors import EmbeddedDetector
from streams.envelope import read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import DetectionCompleted
from streams.stages.detect import DetectStage
from streams.watch.watcher import Watcher
from tests.fakes.media import photo
from tests.observability.support import CAMERA, FAST, FOLDER

PERSON_BOX = (1210, 620, 1210 + 106, 620 + 150)  # a person 150 px tall in a 1080p frame


def _scene(folder: Path) -> tuple[Path, Path]:
    """An empty 1080p view, then the same view with a person pasted in (JPEG, as uploaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    view = Image.open(photo("empty-rocket.jpg")).convert("RGB").resize((1920, 1080))
    person = Image.open(photo("person-astronaut.jpg")).convert("RGB").crop((14, 14, 363, 507))
    x1, y1, x2, y2 = PERSON_BOX
    with_person = view.copy()
    with_person.paste(person.resize((x2 - x1, y2 - y1)), (x1, y1))
    empty, busy = folder / "MDAlarm_20261207-101500.jpg", folder / "MDAlarm_20261207-101502.jpg"
    view.save(empty, quality=90)
    with_person.save(busy, quality=90)
    return empty, busy


async def _read_all(redis: Redis, stream: str) -> list[StreamEntry]:
    reply: Any = await redis.xreadgroup(Group.DETECT.value, "t", {stream: ">"})
    return [(i.decode(), f) for i, f in reply[0][1]]


async def _detections(redis: Redis, names: StreamNames) -> list[DetectionCompleted]:
    found = []
    for _, fields in await redis.xrange(names.detections(CAMERA)):
        entry, _ = read_fields(fields)
        assert isinstance(entry, DetectionCompleted)
        found.append(entry)
    return found


def _persons(entry: DetectionCompleted) -> list[tuple[float, float, float, float]]:
    return [
        (o.bbox.x, o.bbox.y, o.bbox.x + o.bbox.width, o.bbox.y + o.bbox.height)
        for o in entry.objects
        if o.label == "person"
    ]


def _overlaps(box: tuple[float, float, float, float]) -> bool:
    x1, y1, x2, y2 = PERSON_BOX
    return box[0] < x2 and x1 < box[2] and box[1] < y2 and y1 < box[3]


async def test_motion_finds_the_small_person_the_full_pass_misses(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    names = StreamNames(key_prefix)
    empty, busy = _scene(tmp_path / FOLDER)
    watcher = Watcher(redis_client, names, tmp_path, FAST)
    (first,) = await watcher.ingest(empty)
    (second,) = await watcher.ingest(busy)
    stream = names.files(CAMERA)
    await ensure_group(redis_client, stream, Group.DETECT.value)
    entries = await _read_all(redis_client, stream)
    assert [i for i, _ in entries] == [first.entry_id, second.entry_id]

    full, motion = EmbeddedDetector(mode="full"), EmbeddedDetector(mode="motion")
    try:
        alone = await full.detect(busy, "image")
        assert not [o for o in alone.objects if o.label == "person"]  # too small for one pass

        stage = DetectStage(redis=redis_client, names=names, detector=motion, camera_root=tmp_path)
        assert not (await stage.handle(stream, entries)).failed
        view, scene = await _detections(redis_client, names)
        assert view.reference_entry_id is None  # the camera's first file: tiles instead
        assert view.passes == 1 + 8  # 1080p in tiles of 640 px
        assert not _persons(view)
        assert scene.reference_entry_id == first.entry_id
        assert scene.passes == 2  # the full frame and one crop around the person
        assert any(_overlaps(box) for box in _persons(scene)), scene.objects

        # The file detected again by a fresh worker (no remembered pictures, the later file
        # first): the same previous file, the same objects.
        await redis_client.xgroup_destroy(stream, Group.DETECT.value)
        await ensure_group(redis_client, stream, Group.DETECT.value)
        again = EmbeddedDetector(mode="motion")
        try:
            rerun = DetectStage(
                redis=redis_client, names=names, detector=again, camera_root=tmp_path
            )
            assert not (
                await rerun.handle(stream, list(reversed(await _read_all(redis_client, stream))))
            ).failed
        finally:
            await again.aclose()
        repeated = {d.file_entry_id: d for d in (await _detections(redis_client, names))[2:]}
        assert repeated[second.entry_id].objects == scene.objects
        assert repeated[second.entry_id].reference_entry_id == first.entry_id
        assert repeated[first.entry_id].objects == view.objects
    finally:
        await full.aclose()
        await motion.aclose()

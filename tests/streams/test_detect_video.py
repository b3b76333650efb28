"""The detect stage on a real generated video and a real Redis: each object of the entry carries
the time of the sampled frame it was seen in, so that the dashboard can show that frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from streams.detectors import EmbeddedDetector
from streams.envelope import read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import DetectionCompleted
from streams.stages.detect import DetectStage
from streams.watch.watcher import Watcher
from streams.zones import ZoneSet
from tests.fakes.media import photo, write_video
from tests.observability.support import CAMERA, FAST, FOLDER


async def test_a_video_entry_records_the_frame_time_of_each_object(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    """Two seconds of an empty launch, then two of the cameraman: the person is recorded at a
    frame sampled after two seconds, on the one-second grid."""
    names = StreamNames(key_prefix)
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    write_video(
        folder / "clip.mp4",
        [(photo("empty-rocket.jpg"), 2.0), (photo("person-cameraman.jpg"), 2.0)],
    )
    (outcome,) = await Watcher(redis_client, names, tmp_path, FAST).ingest(folder)
    assert outcome.entry_id is not None
    stream = names.files(CAMERA)
    await ensure_group(redis_client, stream, Group.DETECT.value)
    reply: Any = await redis_client.xreadgroup(Group.DETECT.value, "t", {stream: ">"})
    entries = [(i.decode(), f) for i, f in reply[0][1]]
    detector = EmbeddedDetector(
        mode="full", confidence_threshold=0.35, frame_interval_seconds=1.0, max_frames=10
    )
    try:
        stage = DetectStage(
            redis=redis_client,
            names=names,
            detector=detector,
            camera_root=tmp_path,
            zones=ZoneSet({}),
        )
        assert not (await stage.handle(stream, entries)).failed
    finally:
        await detector.aclose()
    ((_, fields),) = await redis_client.xrange(names.detections(CAMERA))
    entry, _ = read_fields(fields)
    assert isinstance(entry, DetectionCompleted)
    assert (entry.media_kind, entry.frames) == ("video", 4)
    person = next(o for o in entry.objects if o.label == "person")
    assert person.frame_seconds in (2.0, 3.0)
    assert all(o.frame_seconds in (0.0, 1.0, 2.0, 3.0) for o in entry.objects)

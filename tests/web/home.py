"""A small home for the page tests: two cameras with real pictures, three events, streams.

Rows are inserted directly (like tests/api), relative to now so that "today" and "the last 24
hours" contain them.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.names import StreamNames
from tests.api.rows import add_camera, detection_row, event_row, insert, media_row
from tests.conftest import PHOTOS


@dataclass(frozen=True)
class Home:
    now: datetime
    high: dict[str, Any]  # front_door, two pictures with boxes, analysed high
    low: dict[str, Any]  # back_yard, one picture with nothing detected, analysed low
    pending: dict[str, Any]  # front_door, newest, not analysed yet, no files
    person: dict[str, Any]  # the detection in the high event's first picture
    files: dict[str, dict[str, Any]]


def _copy(root: Path, folder: str, photo: str, name: str) -> str:
    target = root / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PHOTOS / photo, target)
    return f"{folder}/{name}"


async def build_home(engine: AsyncEngine, root: Path, redis: Redis, names: StreamNames) -> Home:
    now = datetime.now(UTC).replace(microsecond=0)
    await add_camera(engine, "front_door", "Front Door")
    await add_camera(engine, "back_yard", "Back Yard")
    a = media_row(
        "front_door",
        "1-0",
        _copy(root, "Front Door", "person-astronaut.jpg", "a.jpg"),
        now - timedelta(minutes=10),
    )
    b = media_row(
        "front_door",
        "2-0",
        _copy(root, "Front Door", "cat-chelsea.jpg", "b.jpg"),
        now - timedelta(minutes=9),
    )
    c = media_row(
        "back_yard",
        "1-0",
        _copy(root, "Back Yard", "empty-coffee.jpg", "c.jpg"),
        now - timedelta(minutes=30),
    )
    await insert(engine, "media_files", [a, b, c])
    person = detection_row(a, "5-0", 0, "person", (60.0, 20.0, 300.0, 450.0), (512, 512), 0.91)
    cat = detection_row(b, "6-0", 0, "cat", (20.0, 30.0, 200.0, 200.0), (451, 300), 0.8)
    await insert(engine, "detections", [person, cat])
    high = event_row(
        0,
        "front_door",
        now - timedelta(minutes=10),
        risk_level="high",
        risk_score=72,
        summary="A person and a cat at the front door",
        reasoning="person at confidence 0.91; a cat",
        analyzer="rules",
        object_types=["cat", "person"],
        detection_count=2,
    )
    low = event_row(
        1,
        "back_yard",
        now - timedelta(minutes=30),
        risk_level="low",
        risk_score=5,
        summary="Nothing of note",
        object_types=[],
        detection_count=0,
    )
    pending = event_row(
        2,
        "front_door",
        now - timedelta(minutes=1),
        analysis_status="pending",
        risk_level=None,
        risk_score=None,
        summary=None,
    )
    for row in (high, low, pending):  # one INSERT each: their columns differ
        await insert(engine, "events", [row])
    links = [
        (high, "5-0", a, 0),
        (high, "6-0", b, 1),
        (low, "7-0", c, 0),
    ]
    await insert(
        engine,
        "event_detections",
        [
            {
                "event_id": event["id"],
                "detection_entry_id": detection_entry,
                "file_entry_id": file["entry_id"],
                "camera_id": file["camera_id"],
                "position": position,
            }
            for event, detection_entry, file, position in links
        ],
    )
    await insert(
        engine,
        "dead_letters",
        [
            {
                "camera_id": "front_door",
                "dead_entry_id": "9-0",
                "source_stream": names.files("front_door"),
                "entry_id": "3-0",
                "group_name": "detect",
                "deliveries": 5,
                "last_error": "UndecodableMediaError: truncated",
                "original_type": "file.observed",
                "dead_at": now - timedelta(minutes=3),
            }
        ],
    )
    await redis.sadd(names.camera_set, "front_door", "back_yard")  # type: ignore[misc]
    files = names.files("front_door")
    await redis.xadd(files, {b"n": b"1"})
    await redis.xgroup_create(files, "detect", id="0")
    return Home(now, high, low, pending, person, {"a": a, "b": b, "c": c})


@dataclass(frozen=True)
class VideoEvent:
    event: dict[str, Any]
    path: str  # relative to the camera root
    person: dict[str, Any]  # seen in the frame at 1 s (the video's first second is black)
    car: dict[str, Any]  # seen in the first frame


async def add_video_event(engine: AsyncEngine, root: Path, now: datetime) -> VideoEvent:
    """An event of the `front_door` camera (added by `build_home`) whose one file is a real
    three-second MP4 (a black second, then a photo), with objects in two sampled frames."""
    from PIL import Image

    from tests.fakes.media import write_video

    folder = root / "Front Door"
    folder.mkdir(parents=True, exist_ok=True)
    black = root / "black.png"
    Image.new("RGB", (320, 240), (0, 0, 0)).save(black)
    write_video(
        folder / "clip.mp4", [(black, 1.0), (PHOTOS / "person-astronaut.jpg", 2.0)], size=(320, 240)
    )
    clip = media_row(
        "front_door",
        "30-0",
        "Front Door/clip.mp4",
        now - timedelta(minutes=20),
        media_kind="video",
        mime="video/mp4",
    )
    await insert(engine, "media_files", [clip])
    size = (320, 240)
    person = detection_row(clip, "31-0", 0, "person", (40.0, 10.0, 200.0, 220.0), size, 0.9, 1.0)
    car = detection_row(clip, "31-0", 1, "car", (10.0, 150.0, 60.0, 40.0), size, 0.5, 0.0)
    await insert(engine, "detections", [person, car])
    event = event_row(
        10,
        "front_door",
        now - timedelta(minutes=20),
        risk_level="medium",
        risk_score=40,
        summary="A person in a video",
        object_types=["car", "person"],
        detection_count=2,
    )
    await insert(engine, "events", [event])
    await insert(
        engine,
        "event_detections",
        [
            {
                "event_id": event["id"],
                "detection_entry_id": "31-0",
                "file_entry_id": clip["entry_id"],
                "camera_id": "front_door",
                "position": 0,
            }
        ],
    )
    return VideoEvent(event, clip["path"], person, car)


def event_id(row: dict[str, Any]) -> str:
    return str(row["id"])


def new_id() -> str:
    return str(uuid.uuid4())


class Markup(HTMLParser):
    """What the accessibility checks need from a page: headings, images, form controls and
    their labels, landmarks."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.label_for: set[str] = set()
        self.wrapped: list[str] = []  # controls inside a <label>
        self._labels = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag == "label":
            self._labels += 1
            if found.get("for"):
                self.label_for.add(str(found["for"]))
        elif tag in ("input", "select", "textarea") and self._labels:
            self.wrapped.append(str(found.get("id") or found.get("name")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._labels -= 1

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def problems(self) -> list[str]:
        """Accessibility basics a page must meet; empty when it meets them."""
        out = []
        if [a.get("lang") for a in self.all("html")] != ["en"]:
            out.append("<html lang> missing")
        if len(self.all("main")) != 1:
            out.append("not exactly one <main>")
        if len(self.all("h1")) != 1:
            out.append("not exactly one <h1>")
        for img in self.all("img"):
            if not img.get("alt"):
                out.append(f"image without alt text: {img.get('src')}")
        for tag in ("input", "select"):
            for control in self.all(tag):
                if control.get("type") in ("hidden", "submit"):
                    continue
                name = str(control.get("id") or control.get("name"))
                if control.get("id") not in self.label_for and name not in self.wrapped:
                    out.append(f"{tag} without a label: {name}")
        ids = [a["id"] for _, a in self.tags if a.get("id")]
        if len(ids) != len(set(ids)):
            out.append("duplicate ids")
        return out

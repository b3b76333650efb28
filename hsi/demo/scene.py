"""The demo's script: which camera uploads which photograph when, and how an upload is written.

The photographs ship in `hsi/demo/photos/` (public domain and CC0, see the README there); the gate
camera's wide 1080p views are made from them (`WIDE`): its visitor stands far away, 150 px tall,
too small for one pass of the embedded model, found in the crop around what changed. An upload
is written the way cameras write them over FTP: in pieces with pauses in between, straight under
its final name (as Foscam cameras do) or under a temporary `.part` name that is renamed at the end
(as many FTP clients do). The watcher must wait for both to be complete before it reads them.
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from PIL import Image

TEMPORARY_SUFFIX = ".part"


@dataclass(frozen=True)
class Shot:
    """One upload of the scene."""

    at: float  # seconds after the scene starts, at speed 1
    camera: str  # the camera's folder name, as the camera is set up to upload: "Front Door"
    photo: str  # a file of hsi/demo/photos
    caption: str  # what happens, for the terminal
    via_temporary_name: bool = False  # write `<name>.part`, then rename it


SCENE: tuple[Shot, ...] = (
    Shot(0.0, "Back Yard", "cat-chelsea.jpg", "a cat crosses the lawn"),
    Shot(2.0, "Driveway", "empty-rocket.jpg", "motion, but nobody there", via_temporary_name=True),
    Shot(5.0, "Driveway", "person-cameraman.jpg", "someone with a camera walks up the drive"),
    Shot(7.0, "Front Door", "person-astronaut.jpg", "a visitor at the door"),
    Shot(9.0, "Front Door", "person-cameraman.jpg", "the photographer joins them"),
    Shot(11.0, "Back Yard", "person-astronaut.jpg", "someone walks round to the back"),
    Shot(13.0, "Front Door", "empty-coffee.jpg", "a cup left on the step", via_temporary_name=True),
    Shot(14.0, "Gate", "gate.jpg", "the gate camera's wide view: nobody"),
    Shot(16.0, "Gate", "gate-visitor-1.jpg", "someone far off at the gate, 150 px tall"),
    Shot(17.0, "Gate", "gate-visitor-2.jpg", "they take a step"),
)

# The gate camera's 1920×1080 views: the view, and a visitor pasted 150 px tall at (x, y).
WIDE_SIZE = (1920, 1080)
WIDE_VIEW = "empty-rocket.jpg"
VISITOR = "person-astronaut.jpg"
VISITOR_BOX = (20, 10, 362, 512)  # the person in the photograph, drawn by hand
VISITOR_HEIGHT = 150
WIDE: dict[str, tuple[int, int] | None] = {
    "gate.jpg": None,
    "gate-visitor-1.jpg": (1210, 620),
    "gate-visitor-2.jpg": (1150, 640),
}

CAMERAS: tuple[str, ...] = tuple(dict.fromkeys(shot.camera for shot in SCENE))


def scene_seconds(speed: float) -> float:
    """How long the scene plays at `speed`."""
    return max(shot.at for shot in SCENE) / speed


@functools.cache
def photo_bytes(name: str) -> bytes:
    """A shipped demo photograph, or one of the gate camera's views made from them (`WIDE`)."""
    if name not in WIDE:
        return resources.files("hsi.demo").joinpath("photos", name).read_bytes()
    view = _photo(WIDE_VIEW).resize(WIDE_SIZE, Image.Resampling.BICUBIC)
    place = WIDE[name]
    if place is not None:
        person = _photo(VISITOR).crop(VISITOR_BOX)
        width = round(person.width * VISITOR_HEIGHT / person.height)
        view.paste(person.resize((width, VISITOR_HEIGHT), Image.Resampling.LANCZOS), place)
    out = io.BytesIO()
    view.save(out, "JPEG", quality=90)
    return out.getvalue()


def _photo(name: str) -> Image.Image:
    with Image.open(io.BytesIO(photo_bytes(name))) as opened:
        return opened.convert("RGB")


def upload_name(captured: datetime, taken: Collection[str]) -> str:
    """A Foscam alarm-snapshot name for `captured` (naive local time of the camera), made unique
    within a folder whose names are `taken`: `MDAlarm_20261128-120000.jpg`, then `…-1.jpg`."""
    stem = f"MDAlarm_{captured:%Y%m%d-%H%M%S}"
    name, n = f"{stem}.jpg", 0
    while name in taken or name + TEMPORARY_SUFFIX in taken:
        n += 1
        name = f"{stem}-{n}.jpg"
    return name


def pieces(data: bytes, count: int) -> list[bytes]:
    """`data` cut into `count` parts of nearly equal size (fewer when it is shorter)."""
    if not data:
        return [data]
    count = max(1, min(count, len(data)))
    size = -(-len(data) // count)
    return [data[i : i + size] for i in range(0, len(data), size)]


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


async def upload(
    data: bytes, target: Path, *, parts: int = 6, pause: float = 0.1, via_temporary_name: bool
) -> None:
    """Write `data` to `target` the way a camera uploads it: in `parts` with `pause` seconds in
    between, under `target`'s own name or under `<name>.part` renamed at the end."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = target.with_name(target.name + TEMPORARY_SUFFIX) if via_temporary_name else target
    for i, part in enumerate(pieces(data, parts)):
        if i:
            await asyncio.sleep(pause)
        await asyncio.to_thread(_append, written, part)
    if written != target:
        await asyncio.to_thread(written.rename, target)

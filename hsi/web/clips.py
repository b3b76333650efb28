"""A video's moments on the event page: the sampled frames in which objects were found, each
with its time (to seek the video to), its objects' boxes and the detection whose thumbnail shows
that frame. Pure: the event detail's detections in, moments out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rect:
    """A box in the pixels of its frame; `best`: the frame's most confident object."""

    x: float
    y: float
    width: float
    height: float
    label: str
    best: bool


@dataclass(frozen=True)
class Moment:
    seconds: float
    labels: tuple[str, ...]  # most confident first, each once
    thumbnail_of: str  # the frame's most confident detection
    width: int  # the frame size the boxes refer to
    height: int
    boxes: tuple[Rect, ...]


def moments(detections: Iterable[Mapping[str, Any]]) -> list[Moment]:
    """The frames of a video's detections that have a recorded time, earliest first; objects
    recorded without one (before times were recorded) are left out."""
    frames: dict[float, list[Mapping[str, Any]]] = {}
    for item in detections:
        seconds = item.get("frame_seconds")
        if seconds is not None:
            frames.setdefault(float(seconds), []).append(item)
    out = []
    for seconds in sorted(frames):
        found = sorted(frames[seconds], key=lambda d: (-d["confidence"], d["id"]))
        best = found[0]
        out.append(
            Moment(
                seconds=seconds,
                labels=tuple(dict.fromkeys(d["label"] for d in found)),
                thumbnail_of=best["id"],
                width=best["image_width"],
                height=best["image_height"],
                boxes=tuple(
                    Rect(
                        d["bbox"]["x"],
                        d["bbox"]["y"],
                        d["bbox"]["width"],
                        d["bbox"]["height"],
                        d["label"],
                        d is best,
                    )
                    for d in reversed(found)  # the best last: drawn on top
                ),
            )
        )
    return out

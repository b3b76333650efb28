"""A video's moments on the event page, from its detections (pure)."""

from __future__ import annotations

from typing import Any

from hsi.web.clips import Rect, moments


def item(id_: str, label: str, confidence: float, seconds: float | None) -> dict[str, Any]:
    return {
        "id": id_,
        "label": label,
        "confidence": confidence,
        "frame_seconds": seconds,
        "bbox": {"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0},
        "image_width": 640,
        "image_height": 480,
    }


def test_moments_group_objects_by_frame_earliest_first() -> None:
    """One moment per sampled frame, earliest first; its thumbnail and red box are its most
    confident object's, drawn last; labels once each; objects without a time are left out."""
    found = moments(
        [
            item("a", "person", 0.6, 2.0),
            item("b", "car", 0.9, 0.0),
            item("c", "person", 0.8, 2.0),
            item("d", "person", 0.7, 2.0),
            item("e", "cat", 0.99, None),
        ]
    )
    assert [(m.seconds, m.labels, m.thumbnail_of) for m in found] == [
        (0.0, ("car",), "b"),
        (2.0, ("person",), "c"),
    ]
    assert (found[1].width, found[1].height) == (640, 480)
    assert [box.best for box in found[1].boxes] == [False, False, True]
    assert found[0].boxes == (Rect(1.0, 2.0, 3.0, 4.0, "car", True),)


def test_an_image_or_old_video_has_no_moments() -> None:
    """Without recorded frame times there is nothing to mark on a timeline."""
    assert moments([item("a", "person", 0.9, None)]) == []
    assert moments([]) == []

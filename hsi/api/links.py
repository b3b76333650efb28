"""The URLs the API hands out, built in one place."""

from __future__ import annotations

from urllib.parse import quote


def camera_url(camera_id: str) -> str:
    return f"/api/cameras/{camera_id}"


def event_url(event_id: object) -> str:
    return f"/api/events/{event_id}"


def detection_thumbnail_url(detection_id: object) -> str:
    return f"/api/detections/{detection_id}/thumbnail"


def media_url(camera_id: str, path: str | None, root: str = "/api") -> str | None:
    """`/api/media/front_door/Front%20Door/snap/x.jpg` for a path relative to the camera root
    (under `root`: the dashboard's are under `/ui`)."""
    if not path:
        return None
    return f"{root}/media/{camera_id}/{quote(path, safe='/')}"

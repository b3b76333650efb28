"""GET /api/media/{camera_id}/{path} (original files) and /api/detections/{id}/thumbnail.

Every refusal of a media path is the same 404 `{"error": "no such media file"}` (see
`hsi.api.media`); the reason goes to the log only.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from hsi.api.endpoint import CAMERA_ID_PATTERN, UUID, Endpoint, path_param
from hsi.api.media import MediaRefused, caching_headers, not_modified, resolve_media
from hsi.api.params import Query, parse_uuid
from hsi.api.queries.cameras import camera_folder
from hsi.api.queries.detections import detection_image
from hsi.api.responses import NotFound
from hsi.api.state import resources
from hsi.api.thumbnails import ThumbnailSpec, render_thumbnail_file
from hsi.logs.setup import log_event
from streams.detectors.base import UndecodableMediaError
from streams.media import MEDIA_EXTENSIONS, mime_type
from streams.names import is_camera_id

log = logging.getLogger("hsi.api.media")

NO_SUCH_MEDIA = "no such media file"
# What a media file may be served as: the allow-listed types, by their extension.
MEDIA_TYPES = tuple(sorted({t for ext in MEDIA_EXTENSIONS if (t := mime_type(f"x{ext}"))}))


def _file_response(request: Request, path: Path, media_type: str) -> Response:
    stat = path.stat()
    headers = caching_headers(stat)
    if not_modified(
        request.headers.get("if-none-match"),
        request.headers.get("if-modified-since"),
        headers["ETag"],
        stat.st_mtime,
    ):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, stat_result=stat, headers=headers)


async def media_file(request: Request, _: Query) -> Response:
    """The original file of a camera, confined to the camera's folder."""
    res = resources(request)
    camera_id: str = request.path_params["camera_id"]
    relative: str = request.path_params["path"]
    folder = None
    if is_camera_id(camera_id):
        async with res.engine.connect() as conn:
            folder = await camera_folder(conn, camera_id)
    if folder is None:
        raise NotFound(NO_SUCH_MEDIA)
    try:
        target, mime = await asyncio.to_thread(
            resolve_media, res.config.camera_root, folder, relative
        )
        return await asyncio.to_thread(_file_response, request, target, mime)
    except (MediaRefused, OSError) as exc:
        log_event(log, "api.media_refused", level=logging.DEBUG, camera=camera_id, reason=str(exc))
        raise NotFound(NO_SUCH_MEDIA) from None


async def detection_thumbnail(request: Request, _: Query) -> Response:
    """A JPEG of the detection's picture with the boxes of its detection result drawn."""
    res = resources(request)
    raw = request.path_params["detection_id"]
    detection_id = parse_uuid(raw)
    if detection_id is None:
        raise NotFound(f"no detection {raw!r}")
    cached = res.config.thumbnail_dir / f"{detection_id}.jpg"
    if not await asyncio.to_thread(cached.is_file):
        async with res.engine.connect() as conn:
            image = await detection_image(conn, detection_id)
            if image is None:
                raise NotFound(f"no detection {raw!r}")
            folder = await camera_folder(conn, image.camera_id)
        spec = ThumbnailSpec(res.config.thumbnail_max_width, res.config.thumbnail_jpeg_quality)
        try:
            if folder is None:
                raise MediaRefused("the camera is not projected")
            source, _mime = await asyncio.to_thread(
                resolve_media, res.config.camera_root, folder, image.path
            )
            async with res.thumbnail_slots:
                await asyncio.to_thread(
                    render_thumbnail_file,
                    source,
                    image.boxes,
                    (image.image_width, image.image_height),
                    cached,
                    spec,
                    image.frame_seconds,
                )
        except (MediaRefused, UndecodableMediaError, OSError) as exc:
            log_event(
                log,
                "api.thumbnail_unavailable",
                level=logging.WARNING,
                detection=str(detection_id),
                reason=str(exc),
            )
            raise NotFound(
                "the media file of this detection is missing or cannot be decoded"
            ) from None
    return await asyncio.to_thread(_file_response, request, cached, "image/jpeg")


ENDPOINTS = (
    Endpoint(
        "/api/media/{camera_id}/{path:path}",
        media_file,
        "The original camera file. `path` is relative to the camera root (as in the `path` "
        "fields) and must lie inside the camera's folder; allow-listed media types only. "
        "ETag/Last-Modified/304 and Range requests are supported. Any refused path is 404.",
        "media",
        params=(
            path_param(
                "camera_id", "The camera id.", {"type": "string", "pattern": CAMERA_ID_PATTERN}
            ),
            path_param("path", "Path relative to the camera root, e.g. `Front Door/snap/x.jpg`."),
        ),
        responses={
            200: "The file.",
            206: "A byte range.",
            304: "Not modified.",
            404: NO_SUCH_MEDIA,
        },
        content_types=MEDIA_TYPES,
    ),
    Endpoint(
        "/api/detections/{detection_id}/thumbnail",
        detection_thumbnail,
        "JPEG of the detection's image (for a video, the sampled frame it was seen in) with every "
        "box of that picture drawn, this one highlighted in red, scaled to the thumbnail width; "
        "cached.",
        "media",
        params=(path_param("detection_id", "The detection id, a UUID.", UUID),),
        responses={200: "The JPEG.", 304: "Not modified.", 404: "No such detection or file."},
        content_types=("image/jpeg",),
    ),
)

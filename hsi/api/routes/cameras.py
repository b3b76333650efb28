"""GET /api/cameras, GET /api/cameras/{camera_id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.endpoint import CAMERA_ID_PATTERN, Endpoint, path_param
from hsi.api.params import Query
from hsi.api.queries.cameras import get_camera, list_cameras
from hsi.api.responses import JSON, NotFound
from hsi.api.state import resources
from streams.names import is_camera_id


async def cameras_list(request: Request, _: Query) -> Response:
    """Every camera with its counts, last activity, latest file and latest event, and the
    clock check of its latest upload (`clock.skewed`: its clock runs fast)."""
    found = resources(request)
    async with found.engine.connect() as conn:
        return JSON({"items": await list_cameras(conn, found.config.clock_tolerance_seconds)})


async def camera_detail(request: Request, _: Query) -> Response:
    """One camera."""
    camera_id = request.path_params["camera_id"]
    found = None
    if is_camera_id(camera_id):
        held = resources(request)
        async with held.engine.connect() as conn:
            found = await get_camera(conn, camera_id, held.config.clock_tolerance_seconds)
    if found is None:
        raise NotFound(f"no camera {camera_id!r}")
    return JSON(found)


ENDPOINTS = (
    Endpoint(
        "/api/cameras",
        cameras_list,
        "List cameras with file and event counts, last activity and latest file/event links.",
        "cameras",
        responses={200: '`{"items": [camera, ...]}`'},
    ),
    Endpoint(
        "/api/cameras/{camera_id}",
        camera_detail,
        "One camera with its counts and latest file/event links.",
        "cameras",
        params=(
            path_param(
                "camera_id",
                "The camera id, e.g. `front_door`.",
                {"type": "string", "pattern": CAMERA_ID_PATTERN},
            ),
        ),
        responses={200: "The camera.", 404: "No such camera."},
    ),
)

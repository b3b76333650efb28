"""Pictures for the pages: `/ui/thumbnails/{id}` and `/ui/media/{camera}/{path}`.

An `<img>` cannot send `X-API-Key`, so the pages cannot point at `/api/detections/{id}/thumbnail`
or `/api/media/...` when keys are on. These routes check the dashboard cookie instead and then
run the API's own handlers: the same confinement, caching headers, 304s and thumbnail cache.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hsi.api.params import Query
from hsi.api.routes.media import detection_thumbnail, media_file
from hsi.web.format import UI
from hsi.web.site import Site

_NO_PARAMETERS = Query((), ())


def file_routes(site: Site) -> list[BaseRoute]:
    async def thumbnail(request: Request) -> Response:
        """The detection's picture with every box of its file drawn (this one in red)."""
        return await detection_thumbnail(request, _NO_PARAMETERS)

    async def media(request: Request) -> Response:
        """The original camera file."""
        return await media_file(request, _NO_PARAMETERS)

    resource = site.gate.resource
    return [
        Route(
            f"{UI}/thumbnails/{{detection_id}}",
            resource(thumbnail),
            methods=["GET"],
            name="web_thumbnail",
        ),
        Route(
            f"{UI}/media/{{camera_id}}/{{path:path}}",
            resource(media),
            methods=["GET"],
            name="web_media",
        ),
    ]

"""A read-only web dashboard served by the API's Starlette app: server-rendered pages
(Jinja2), a little vanilla JavaScript for live updates, static files, no front-end build.

    routes = [*api_routes, *web_routes(api_config, web_config(settings))]

Pages: `/` (live), `/events`, `/events/{id}`, `/cameras`, `/charts`, `/system`,
`/reanalyses`, `/reanalyses/{run}`. Under `/ui`:
the key form, the live page's card fragments, pictures and the static files. When API keys
are on, every page, fragment and picture checks the dashboard cookie (`hsi.web.auth`).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from hsi.api.config import APIConfig
from hsi.web.config import AIBackend, WebConfig
from hsi.web.files import file_routes
from hsi.web.format import UI
from hsi.web.keys import key_routes
from hsi.web.pages import page_routes
from hsi.web.reanalyses import reanalysis_routes
from hsi.web.render import STATIC
from hsi.web.site import Site
from hsi.web.status import status_routes

__all__ = ["AIBackend", "WebConfig", "web_routes"]


def web_routes(config: APIConfig, web: WebConfig | None = None) -> list[BaseRoute]:
    """The dashboard's routes for the app of `config` (keys, camera root, thumbnails)."""
    site = Site.build(config, web or WebConfig())
    return [
        *page_routes(site),
        *status_routes(site),
        *reanalysis_routes(site),
        *key_routes(site),
        *file_routes(site),
        Mount(f"{UI}/static", StaticFiles(directory=STATIC), name="web_static"),
    ]

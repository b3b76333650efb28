"""One table entry per route: path, handler, summary and parameters. `Endpoint.route()` makes
the Starlette route (GET only; the handler receives the checked `Query`), and `hsi.api.openapi`
describes the same table, so the documentation cannot drift from what the routes accept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hsi.api.params import LABEL_PATTERN, Query

Handler = Callable[[Request, Query], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    location: str = "query"  # query | path | header
    required: bool = False
    repeatable: bool = False  # `?a=x&a=y` or `?a=x,y`


@dataclass(frozen=True)
class Endpoint:
    path: str
    handler: Handler
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    responses: Mapping[int, str] = field(default_factory=dict)
    content_types: tuple[str, ...] = ("application/json",)  # of its 2xx answers
    authenticated: bool = True
    rate_limited: bool = True  # takes from a rate-limit bucket (everything but /health)
    # Statuses of 400 and above whose body is the route's own answer, not `{"error": ...}`.
    answers: frozenset[int] = frozenset()
    # Reads PostgreSQL or Redis, so it answers 503 (with Retry-After) while they are unreachable.
    uses_stores: bool = True

    @property
    def query_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params if p.location == "query")

    def route(self) -> Route:
        accepted = self.query_names
        handler = self.handler

        async def endpoint(request: Request) -> Response:
            return await handler(request, Query(request.query_params.multi_items(), accepted))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return Route(self.path, endpoint, methods=["GET"], name=handler.__name__)


# --- parameters shared by several routes --------------------------------------------------------

CAMERA_ID_PATTERN = r"^[a-z0-9][a-z0-9_]{0,63}$"  # what `streams.names.is_camera_id` accepts
UUID: Mapping[str, Any] = {"type": "string", "format": "uuid"}
LABELS: Mapping[str, Any] = {"type": "array", "items": {"type": "string", "pattern": LABEL_PATTERN}}

LIMIT = Param(
    "limit",
    "Page size, 1–100 (default 50).",
    {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
)
CURSOR = Param("cursor", "The `next_cursor` of the previous page, unchanged.")
CAMERA_ID = Param(
    "camera_id",
    "Only this camera (a camera id such as `front_door`).",
    {"type": "string", "pattern": CAMERA_ID_PATTERN},
)
SINCE = Param(
    "since",
    "From this time, inclusive (ISO 8601; without an offset: UTC).",
    {"type": "string", "format": "date-time"},
)
UNTIL = Param(
    "until",
    "Before this time, exclusive (ISO 8601; without an offset: UTC).",
    {"type": "string", "format": "date-time"},
)


def path_param(name: str, description: str, schema: Mapping[str, Any] | None = None) -> Param:
    return Param(name, description, schema or {"type": "string"}, location="path", required=True)


PAGE_SCHEMA_NOTE = (
    'A page: `{"items": [...], "next_cursor": str | null, "has_more": bool}`; pass `next_cursor` '
    "as `cursor` for the next page."
)

"""The OpenAPI 3.1 description, built from the endpoint table (`hsi.api.endpoint`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hsi import __version__
from hsi.api.endpoint import Endpoint, Param

_CONVERTER = re.compile(r"\{(\w+)(?::\w+)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong and what to do."},
        "parameter": {"type": "string", "description": "The offending query parameter (400)."},
    },
}


def openapi_path(path: str) -> str:
    """Starlette's `{path:path}` → OpenAPI's `{path}`."""
    return _CONVERTER.sub(r"{\1}", path)


def _parameter(param: Param) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "description": param.description,
        "required": param.required or param.location == "path",
        "schema": dict(param.schema),
    }
    if param.repeatable:
        out["style"] = "form"
        out["explode"] = True
    return out


def _response(endpoint: Endpoint, status: int, description: str) -> dict[str, Any]:
    if status >= 400 and status not in endpoint.answers:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    if status in (204, 304):
        return {"description": description}
    return {"description": description, "content": {t: {} for t in endpoint.content_types}}


def _operation(endpoint: Endpoint, keys_enabled: bool, rate_limited: bool) -> dict[str, Any]:
    responses = {
        str(status): _response(endpoint, status, text)
        for status, text in sorted(endpoint.responses.items())
    }
    if endpoint.query_names:
        responses.setdefault("400", _response(endpoint, 400, "A bad or unknown parameter."))
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": [_parameter(p) for p in endpoint.params],
        "responses": responses,
    }
    if endpoint.authenticated and keys_enabled:
        operation["security"] = [{"ApiKey": []}]
        responses.setdefault("401", _response(endpoint, 401, "Missing or invalid API key."))
    if endpoint.rate_limited and rate_limited:
        responses.setdefault("429", _response(endpoint, 429, "Rate limited; see Retry-After."))
    if endpoint.uses_stores:
        responses.setdefault(
            "503", _response(endpoint, 503, "PostgreSQL or Redis is unreachable; see Retry-After.")
        )
    return operation


def build_openapi(
    endpoints: Iterable[Endpoint], *, keys_enabled: bool = False, rate_limited: bool = True
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        item = paths.setdefault(openapi_path(endpoint.path), {})
        item["get"] = _operation(endpoint, keys_enabled, rate_limited)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "HSI query API",
            "version": __version__,
            "description": "Read-only access to cameras, events, detections, media, stream "
            "health, pipeline latency and a live feed. Every route answers GET (and HEAD) only; "
            "other methods are 405. The streams behind the API are described by the AsyncAPI "
            "document at `/asyncapi.json`.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
    return doc

"""JSON responses (orjson) and the API's errors: every error body is `{"error": "..."}`, with
`"parameter"` naming the offending query parameter for a 400."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed: this API is read-only (GET only)",
}


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


class APIError(Exception):
    """An answer other than 200, raised from anywhere below a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        parameter: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})


class BadParameter(APIError):
    """A query parameter that cannot be used (400)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(400, f"{parameter}: {message}", parameter=parameter)


class NotFound(APIError):
    def __init__(self, message: str) -> None:
        super().__init__(404, message)


def error_body(message: str, parameter: str | None = None) -> dict[str, str]:
    body = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return body


def error_response(
    status: int,
    message: str,
    *,
    parameter: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return JSON(error_body(message, parameter), status_code=status, headers=headers)


async def api_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc.status, exc.message, parameter=exc.parameter, headers=exc.headers)


async def http_error_handler(_: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as JSON."""
    assert isinstance(exc, HTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=exc.headers)


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC with a `Z`, microseconds kept (cursors need them)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

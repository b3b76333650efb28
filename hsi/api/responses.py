"""JSON responses (orjson) and the API's errors: every error body is `{"error": "..."}`, with
`"parameter"` naming the offending query parameter for a 400."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from hsi.logs.redact import mask_secrets

_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed: this API is read-only (GET only)",
}


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        # orjson writes string keys faster without OPT_NON_STR_KEYS, and the same bytes; a body
        # with another kind of key is written again with it.
        try:
            return orjson.dumps(content, option=orjson.OPT_UTC_Z)
        except TypeError:
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


# What a Redis client raises when the server cannot be used; redis-py's cluster client raises
# RedisClusterException ("cannot be connected"), which is not a RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)


def unavailable(service: str, setting: str, exc: BaseException) -> Response:
    """503 for a store that cannot be reached (the exception's type only: its text may hold a
    host or worse)."""
    return error_response(
        503,
        f"{service} is unavailable ({type(exc).__name__}); retry shortly, and check the "
        f"{service} server and {setting} if it persists",
        headers={"Retry-After": "5"},
    )


async def api_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc.status, exc.message, parameter=exc.parameter, headers=exc.headers)


async def http_error_handler(_: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as JSON."""
    assert isinstance(exc, HTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=exc.headers)


def stored_error(text: str | None) -> str | None:
    """An error text a stage stored (from an exception, a server's answer), secrets masked: it
    may quote a URL with its password or a request's Authorization header."""
    return None if text is None else mask_secrets(text)


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC with a `Z`, microseconds kept (cursors need them)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

"""Request ids: one per HTTP request, in the `X-Request-ID` response header, in every log line of
the request (`request_id`) and on its span (`hsi.request_id`).

An incoming `X-Request-ID` is kept only when the request's immediate peer is a trusted proxy
(FORWARDED_ALLOW_IPS) and the id is printable ASCII of at most 128 characters; otherwise HSI makes
its own (`uuid4().hex`). The peer is judged before the X-Forwarded-For rewrite: `RequestIds`
runs outside `ProxyHeaders`, which then replaces the client address for trusted proxies (the
app does that itself, so uvicorn runs with `proxy_headers=False`: behind a proxy the address
uvicorn would hand over is already the proxy's client, no longer the peer).

An exception no handler turned into a response becomes a JSON 500 here, logged
(`api.request_failed`) with the request's id, so that error too carries it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import uuid
from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from hsi.api.responses import error_response
from hsi.logs.context import bind_context

__all__ = ["HEADER", "ProxyHeaders", "RequestIds", "accepted_id", "is_trusted", "new_id"]

HEADER = "X-Request-ID"
MAX_LENGTH = 128
SPAN_ATTRIBUTE = "hsi.request_id"
_HEADER_KEY = HEADER.lower().encode("latin-1")

log = logging.getLogger("hsi.api")

ProxyHeaders = ProxyHeadersMiddleware  # X-Forwarded-For/-Proto from the trusted proxies only


def new_id() -> str:
    return uuid.uuid4().hex


def is_trusted(peer: str | None, trusted: Iterable[str]) -> bool:
    """Whether `peer` (an address, or a socket path) is one of `trusted`: addresses, networks
    (`10.0.0.0/8`) or `*`, as FORWARDED_ALLOW_IPS lists them."""
    if peer is None:
        return False
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(peer)
    except ValueError:
        address = None
    for entry in trusted:
        entry = entry.strip()
        if entry == "*" or entry == peer:
            return True
        if address is None:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# Whether a peer is trusted, parsed once per peer address and FORWARDED_ALLOW_IPS (a bounded
# table: addresses from anywhere cannot grow it).
_trusted_peer = functools.lru_cache(maxsize=4096)(is_trusted)


def accepted_id(given: str | None, trusted_peer: bool) -> str | None:
    """The incoming id when it may be kept: from a trusted peer, 1 to 128 printable ASCII
    characters (no spaces, no control characters); None otherwise."""
    if not trusted_peer or given is None or not 0 < len(given) <= MAX_LENGTH:
        return None
    if not all("!" <= c <= "~" for c in given):
        return None
    return given


class RequestIds:
    """Gives every HTTP request its id (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, trusted: Iterable[str] = ("127.0.0.1",)) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        given = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == _HEADER_KEY), None
        )
        peer = client[0] if client else None
        request_id = accepted_id(given, _trusted_peer(peer, self.trusted))
        request_id = request_id or new_id()
        span = trace.get_current_span()
        span.set_attribute(SPAN_ATTRIBUTE, request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with bind_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started:
                    raise
                log.exception("api.request_failed", extra={"path": scope.get("path")})
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))
                response = error_response(
                    500, "internal error; the server log has the details under this request's id"
                )
                await response(scope, receive, send_with_id)

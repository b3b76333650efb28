"""API keys for the dashboard: a cookie for pages, the key itself for the live feed.

When API keys are on, the dashboard asks for a key once (`/ui/key`, a plain form that works
without JavaScript). The server checks it against the API keys and sets a cookie that every
page, fragment and image route checks (`Gate`; the API's `X-API-Key` header is accepted too,
for scripts):

- The cookie holds `cookie_token(key)`, an HMAC of a fixed label under the key, not the key
  itself: it is useless as an `X-API-Key`, and rotating the keys invalidates it. It is
  `HttpOnly` (scripts cannot read it), `SameSite=Lax` (not sent with cross-site sub-requests
  or form posts) and `Secure` when the request came over HTTPS (TLS on).
- The page's script also keeps the key in `localStorage`, because a browser's `EventSource`
  cannot send headers or this cookie to `/api/live`, which takes the key as `?api_key=`.
  Without JavaScript nothing is stored there and the pages still work (no live updates).

A page request without a valid cookie is redirected (303) to the key form, which returns to
the page afterwards; a fragment or image request is a 401. The form's two POSTs (enter, forget)
are refused when the browser says they come from another site (`Sec-Fetch-Site: cross-site`),
so another site cannot sign a visitor in or out; this holds behind proxies that rewrite `Host`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl, quote

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hsi.api.responses import error_response
from hsi.api.security import API_KEY_HEADER, key_matches

COOKIE = "hsi_dashboard"
COOKIE_MAX_AGE = 30 * 24 * 3600
KEY_FORM = "/ui/key"
MAX_FORM_BYTES = 4096
_LABEL = b"hsi.web.cookie.v1"

Handler = Callable[[Request], Awaitable[Response]]


def cookie_token(key: str) -> str:
    """What the cookie holds for `key` (see the module docstring)."""
    return hmac.new(key.encode(), _LABEL, hashlib.sha256).hexdigest()


def cookie_matches(token: str | None, keys: Sequence[SecretStr]) -> bool:
    """Whether `token` is the cookie of one of `keys`, compared in constant time against each."""
    return key_matches(token, keys, cookie_token)


def safe_next(value: str | None) -> str:
    """Where to go after the key form: a path on this site only, else `/`."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 32 or c == "\\" for c in value):
        return "/"
    return value


def cross_site(fetch_site: str | None) -> bool:
    """Whether a request was sent by another site's page (the browser's `Sec-Fetch-Site`;
    absent from older browsers and scripts, which are let through)."""
    return fetch_site is not None and fetch_site.strip().lower() == "cross-site"


def key_form_url(next_path: str) -> str:
    return f"{KEY_FORM}?next={quote(safe_next(next_path), safe='/')}"


def parse_form(body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (first value of each name)."""
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


class Gate:
    """Checks the dashboard cookie when API keys are on."""

    def __init__(self, *, enabled: bool, keys: Sequence[SecretStr]) -> None:
        self.enabled = enabled
        self.keys = tuple(keys)

    def allows(self, request: Request) -> bool:
        """Keys off; or the dashboard cookie; or, for scripts, the API's own `X-API-Key`."""
        if not self.enabled:
            return True
        if cookie_matches(request.cookies.get(COOKIE), self.keys):
            return True
        return key_matches(request.headers.get(API_KEY_HEADER), self.keys)

    def page(self, handler: Handler) -> Handler:
        """A page: without the key, a redirect to the key form that comes back here."""

        async def guarded(request: Request) -> Response:
            if not self.allows(request):
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(key_form_url(here), status_code=303)
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    def resource(self, handler: Handler) -> Handler:
        """A fragment or image: without the key, a 401."""

        async def guarded(request: Request) -> Response:
            if not self.allows(request):
                return error_response(
                    401, f"missing or invalid dashboard key; enter it at {KEY_FORM}"
                )
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    def set_cookie(self, response: Response, request: Request, key: str) -> None:
        response.set_cookie(
            COOKIE,
            cookie_token(key),
            max_age=COOKIE_MAX_AGE,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )

    def key_accepted(self, key: str) -> bool:
        return key_matches(key, self.keys)

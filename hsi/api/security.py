"""API keys and rate limits.

Decisions are pure functions of their inputs (`now` included): `key_matches()`, `take_token()`,
`admit_connection()`, `route_policy()`. `RateLimiter` and `ConnectionSlots` keep the per-client
state of one process (one API process per home; with several, each enforces its own share), and
`Guard` is the ASGI middleware that applies them before any route runs.

Which routes need what (`route_policy()`):
- `/health`, `/ready`, `/openapi.json`: open (probes and documentation).
- `/metrics` and every `/api/*` route: the API key when keys are enabled, and the general bucket;
  media files and thumbnails take from the media bucket instead.
- `/api/live` also accepts the key as `?api_key=` (a browser's EventSource cannot send headers);
  its concurrent connections are capped by `ConnectionSlots` in the route itself.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from hsi.api.config import RateLimits
from hsi.api.responses import error_response

API_KEY_HEADER = "x-api-key"
API_KEY_QUERY = "api_key"

_THUMBNAIL = re.compile(r"^/api/detections/[^/]+/thumbnail$")
_OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/asyncapi.json"})


# --- API keys -----------------------------------------------------------------------------------


def key_matches(
    provided: str | None,
    keys: Sequence[SecretStr],
    token: Callable[[str], str] | None = None,
) -> bool:
    """Whether `provided` equals one of `keys` (or, given `token`, the token of one), compared
    in constant time against every key; an empty key matches nothing."""
    if not provided:
        return False
    given = provided.encode()
    found = False
    for key in keys:
        secret = key.get_secret_value()
        expected = secret if token is None else token(secret)
        found |= bool(secret) and hmac.compare_digest(given, expected.encode())
    return found


# --- route policy -------------------------------------------------------------------------------


class Bucket(StrEnum):
    GENERAL = "general"
    MEDIA = "media"


@dataclass(frozen=True)
class Policy:
    needs_key: bool
    bucket: Bucket | None
    key_in_query: bool = False


def route_policy(path: str) -> Policy:
    if path in _OPEN_PATHS:
        return Policy(needs_key=False, bucket=None)
    if path.startswith("/api/media/") or _THUMBNAIL.match(path):
        return Policy(needs_key=True, bucket=Bucket.MEDIA)
    if path.startswith(("/ui/media/", "/ui/thumbnails/")):
        # the dashboard's pictures: the web routes check the key (or its cookie) themselves
        return Policy(needs_key=False, bucket=Bucket.MEDIA)
    if path == "/api/live":
        return Policy(needs_key=True, bucket=Bucket.GENERAL, key_in_query=True)
    if path == "/metrics" or path == "/api" or path.startswith("/api/"):
        return Policy(needs_key=True, bucket=Bucket.GENERAL)
    return Policy(needs_key=False, bucket=Bucket.GENERAL)


# --- token buckets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    """A client's bucket: `level` tokens at monotonic time `updated`."""

    level: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tokens: Tokens
    retry_after: float  # seconds until a token is available (0 when allowed)


def take_token(tokens: Tokens | None, now: float, per_minute: int) -> Decision:
    """Refill at `per_minute`/60 tokens a second up to `per_minute` (the burst), then take one."""
    capacity = float(per_minute)
    rate = per_minute / 60.0
    if tokens is None:
        level = capacity
    else:
        level = min(capacity, tokens.level + max(0.0, now - tokens.updated) * rate)
    if level >= 1.0:
        return Decision(True, Tokens(level - 1.0, now), 0.0)
    return Decision(False, Tokens(level, now), (1.0 - level) / rate)


class RateLimiter:
    """One token bucket per client for one limit; full buckets are forgotten now and then."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self._max_clients = max_clients
        self._buckets: dict[str, Tokens] = {}

    def take(self, client: str, now: float) -> Decision:
        decision = take_token(self._buckets.get(client), now, self.per_minute)
        self._buckets[client] = decision.tokens
        if len(self._buckets) > self._max_clients:
            self._forget_full(now)
        return decision

    def _forget_full(self, now: float) -> None:
        refill = 60.0  # seconds for an empty bucket to fill up again
        stale = [c for c, t in self._buckets.items() if now - t.updated >= refill]
        for client in stale:
            del self._buckets[client]


# --- live connections ---------------------------------------------------------------------------


class Refusal(StrEnum):
    TOO_MANY_FOR_CLIENT = "too_many_for_client"  # 429
    SERVER_FULL = "server_full"  # 503


def admit_connection(
    total: int, for_client: int, max_total: int, max_per_client: int
) -> Refusal | None:
    """Whether one more live connection may open, given those already open."""
    if for_client >= max_per_client:
        return Refusal.TOO_MANY_FOR_CLIENT
    if total >= max_total:
        return Refusal.SERVER_FULL
    return None


class ConnectionSlots:
    """Counts the open live connections, in total and per client."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self._per_client: dict[str, int] = {}

    def acquire(self, client: str) -> Refusal | None:
        refusal = admit_connection(
            self.total, self._per_client.get(client, 0), self.max_total, self.max_per_client
        )
        if refusal is None:
            self.total += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
        return refusal

    def release(self, client: str) -> None:
        self.total = max(0, self.total - 1)
        left = self._per_client.get(client, 0) - 1
        if left > 0:
            self._per_client[client] = left
        else:
            self._per_client.pop(client, None)


# --- middleware ---------------------------------------------------------------------------------


def client_address(scope: Scope) -> str:
    """The peer address (uvicorn replaces it from X-Forwarded-For for trusted proxies)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Guard:
    """Rate limit, then API key, for every HTTP request (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Sequence[SecretStr],
        keys_enabled: bool,
        limits: RateLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.keys = tuple(keys)
        self.keys_enabled = keys_enabled
        self.limits = limits
        self.clock = clock
        self.limiters = {
            Bucket.GENERAL: RateLimiter(limits.requests_per_minute),
            Bucket.MEDIA: RateLimiter(limits.media_requests_per_minute),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        policy = route_policy(scope["path"])
        if self.limits.enabled and policy.bucket is not None:
            decision = self.limiters[policy.bucket].take(client_address(scope), self.clock())
            if not decision.allowed:
                wait = max(1, math.ceil(decision.retry_after))
                response = error_response(
                    429,
                    f"rate limit exceeded ({policy.bucket.value} requests); retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
                await response(scope, receive, send)
                return
        if self.keys_enabled and policy.needs_key and not self._authorized(scope, policy):
            response = error_response(
                401, "missing or invalid API key; send it in the X-API-Key header"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope, policy: Policy) -> bool:
        for name, value in scope.get("headers", ()):
            if name == API_KEY_HEADER.encode() and key_matches(value.decode("latin-1"), self.keys):
                return True
        if policy.key_in_query:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            return any(k == API_KEY_QUERY and key_matches(v, self.keys) for k, v in query)
        return False

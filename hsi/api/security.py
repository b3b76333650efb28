"""API keys and rate limits.

Decisions are pure functions of their inputs (`now` included): `key_matches()`, `take_token()`,
`admit_connection()`, `route_policy()`. `RateLimiter` and `ConnectionSlots` keep the per-client
state of one process (one API process per home; with several, each enforces its own share), and
`Guard` is the ASGI middleware that applies them before any route runs.

Which routes need what (`route_policy()`), when keys are on:
- `/health`: open (liveness, no numbers).
- `/ready`: open, but only `ready`/`not ready` without the key; its numbers with the key.
- `/metrics`: the key, unless API_METRICS_OPEN exempts it for a scraper.
- `/openapi.json`, `/asyncapi.json` and every `/api/*` route: the key.
- `/api/live` also accepts the key as `?api_key=` (a browser's EventSource cannot send headers);
  its concurrent connections are capped by `ConnectionSlots` in the route itself.
Every route but `/health` takes from a rate-limit bucket (media files, thumbnails and evidence
exports from the media bucket). The key is checked first: a request with a valid key counts
against its key's bucket, any other against its address's, so that guessing keys or flooding
from a shared address cannot spend the budget of a client that holds a key. The limiter's table
is bounded.
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
_EXPORT = re.compile(r"^/api/events/[^/]+/export$")
_DOCUMENTS = frozenset({"/openapi.json", "/asyncapi.json"})
AUTHORIZED = "hsi.authorized"  # scope key: whether the request may see what the key protects


# --- API keys -----------------------------------------------------------------------------------


def matching_key(
    provided: str | None,
    keys: Sequence[SecretStr],
    token: Callable[[str], str] | None = None,
) -> int | None:
    """The index of the key `provided` equals (or, given `token`, whose token it equals),
    compared in constant time against every key; an empty key matches nothing."""
    if not provided:
        return None
    given = provided.encode()
    found = None
    for index, key in enumerate(keys):
        secret = key.get_secret_value()
        expected = secret if token is None else token(secret)
        if hmac.compare_digest(given, expected.encode()) and secret:
            found = index
    return found


def key_matches(
    provided: str | None,
    keys: Sequence[SecretStr],
    token: Callable[[str], str] | None = None,
) -> bool:
    """Whether `provided` is one of `keys` (see `matching_key`)."""
    return matching_key(provided, keys, token) is not None


# --- route policy -------------------------------------------------------------------------------


class Bucket(StrEnum):
    GENERAL = "general"
    MEDIA = "media"


@dataclass(frozen=True)
class Policy:
    needs_key: bool
    bucket: Bucket | None
    key_in_query: bool = False


def route_policy(path: str, *, metrics_open: bool = False) -> Policy:
    if path == "/health":
        return Policy(needs_key=False, bucket=None)
    if path == "/ready":  # the route answers without its numbers when the key is missing
        return Policy(needs_key=False, bucket=Bucket.GENERAL)
    if path in _DOCUMENTS:
        return Policy(needs_key=True, bucket=Bucket.GENERAL)
    if path == "/metrics":
        return Policy(needs_key=not metrics_open, bucket=Bucket.GENERAL)
    if path.startswith("/api/media/") or _THUMBNAIL.match(path) or _EXPORT.match(path):
        return Policy(needs_key=True, bucket=Bucket.MEDIA)
    if path.startswith(("/ui/media/", "/ui/thumbnails/")):
        # the dashboard's pictures: the web routes check the key (or its cookie) themselves
        return Policy(needs_key=False, bucket=Bucket.MEDIA)
    if path == "/api/live":
        return Policy(needs_key=True, bucket=Bucket.GENERAL, key_in_query=True)
    if path == "/api" or path.startswith("/api/"):
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
    """One token bucket per client for one limit, in a table of at most `max_clients`.

    The table is ordered by last use: buckets unused for a minute are full again and forgotten,
    and when more clients than `max_clients` are active the least recently used is forgotten
    (it starts again with a full bucket), so many addresses cannot grow the table without bound.
    """

    REFILL_SECONDS = 60.0  # an empty bucket is full again after this

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._buckets: dict[str, Tokens] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, now: float) -> Decision:
        decision = take_token(self._buckets.pop(client, None), now, self.per_minute)
        self._buckets[client] = decision.tokens  # to the end: most recently used
        while len(self._buckets) > 1:
            name, tokens = next(iter(self._buckets.items()))  # the least recently used
            fresh = now - tokens.updated < self.REFILL_SECONDS
            if fresh and len(self._buckets) <= self.max_clients:
                break
            del self._buckets[name]
        return decision


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
    """The client address (`ProxyHeaders` takes it from X-Forwarded-For for trusted proxies)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Guard:
    """API key, then rate limit, for every HTTP request (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Sequence[SecretStr],
        keys_enabled: bool,
        limits: RateLimits,
        metrics_open: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.keys = tuple(keys)
        self.keys_enabled = keys_enabled
        self.metrics_open = metrics_open
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
        policy = route_policy(scope["path"], metrics_open=self.metrics_open)
        key = self._key(scope, policy) if self.keys_enabled else None
        authorized = not self.keys_enabled or key is not None
        scope[AUTHORIZED] = authorized
        if self.limits.enabled and policy.bucket is not None:
            client = f"key {key}" if key is not None else client_address(scope)
            decision = self.limiters[policy.bucket].take(client, self.clock())
            if not decision.allowed:
                wait = max(1, math.ceil(decision.retry_after))
                response = error_response(
                    429,
                    f"rate limit exceeded ({policy.bucket.value} requests); retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
                await response(scope, receive, send)
                return
        if policy.needs_key and not authorized:
            response = error_response(
                401, "missing or invalid API key; send it in the X-API-Key header"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _key(self, scope: Scope, policy: Policy) -> int | None:
        """The index of the valid key the request carries, or None."""
        for name, value in scope.get("headers", ()):
            if name == API_KEY_HEADER.encode():
                found = matching_key(value.decode("latin-1"), self.keys)
                if found is not None:
                    return found
        if policy.key_in_query:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            for name, value in query:
                if name == API_KEY_QUERY:
                    found = matching_key(value, self.keys)
                    if found is not None:
                        return found
        return None


def authorized(scope: Scope) -> bool:
    """Whether `Guard` found the request may see what the API key protects."""
    return bool(scope.get(AUTHORIZED, False))

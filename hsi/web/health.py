"""What the System and Charts pages know about the pipeline's health, computed server-side.

- Readiness of Redis, PostgreSQL, migrations and the projector is the `/ready` answer itself,
  and per-stage latency is `/api/pipeline/latency` when the app has that route: both are taken
  by `internal_get()`, which runs the app's own route for a path inside this request (no HTTP
  round trip, no key, no port or TLS to know). A route that is missing or fails is "not
  available", never an error of the page.
- The AI backends are probed here (`probe_backend`), as `hsi doctor` does.
- Stream lag comes from `hsi.api.queries.streams`.

`readiness_rows()`, `lag_by_stage()` and `flatten()` are pure: they turn those answers into
the rows the templates show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Message

from hsi.api.queries.streams import StreamHealth
from hsi.web.config import AIBackend
from streams.names import StreamKind

# --- running one of the app's own GET routes -----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int  # 404: the app has no such route; 0: the route failed
    body: Any = None  # the decoded JSON body, or None


async def internal_get(request: Request, path: str, query: str = "") -> Answer:
    """The JSON answer of the app's own GET route for `path`, run within this request."""
    router = getattr(request.scope.get("app"), "router", None)
    scope: dict[str, Any] = {
        **request.scope,
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "path_params": {},
    }
    route = None
    for candidate in getattr(router, "routes", ()):
        if isinstance(candidate, Route):
            match, child = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                scope.update(child)
                break
    if route is None:
        return Answer(404)
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await route.handle(scope, receive, send)
        body = orjson.loads(b"".join(chunks)) if chunks else None
    except Exception:  # the page shows "not available" instead
        return Answer(0)
    return Answer(status, body)


# --- readiness -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: unknown (not checked)
    detail: str


_CHECK_NAMES = {
    "redis": "Redis",
    "postgres": "PostgreSQL",
    "migrations": "Migrations",
    "projector": "Projector",
}


def readiness_rows(ready: Answer) -> list[Check]:
    """The `/ready` checks as rows, in a fixed order; unknown when `/ready` did not answer."""
    checks: Mapping[str, Any] = {}
    if isinstance(ready.body, dict) and isinstance(ready.body.get("checks"), dict):
        checks = ready.body["checks"]
    rows = []
    for key, name in _CHECK_NAMES.items():
        check = checks.get(key)
        if not isinstance(check, dict):
            rows.append(Check(name, None, "not checked (the server could not tell)"))
            continue
        rows.append(Check(name, bool(check.get("ok")), _ready_detail(key, check)))
    return rows


def _ready_detail(key: str, check: Mapping[str, Any]) -> str:
    if "error" in check:
        return f"unavailable ({check['error']})"
    if key == "redis":
        return f"version {check.get('version', '?')}"
    if key == "postgres":
        return "answers"
    if key == "migrations":
        pending = check.get("pending") or []
        return "current" if not pending else f"pending: {', '.join(map(str, pending))}"
    if key == "projector":
        return (
            f"{check.get('behind', '?')} entries behind (at most {check.get('max_behind', '?')}"
            f"), {check.get('cameras', '?')} camera(s)"
        )
    return ""


async def probe_backend(backend: AIBackend, wait_seconds: float) -> Check:
    name = backend.role.capitalize()
    if backend.probe_url is None:
        if backend.module is not None and find_spec(backend.module) is None:
            return Check(name, False, f"{backend.description}: {backend.module} is not installed")
        return Check(name, True, backend.description)
    try:
        async with httpx.AsyncClient(timeout=wait_seconds) as client:
            await client.get(backend.probe_url)
    except httpx.HTTPError as exc:
        return Check(name, False, f"{backend.description}: unreachable ({type(exc).__name__})")
    return Check(name, True, f"{backend.description} answers")


async def probe_backends(backends: Iterable[AIBackend], wait_seconds: float) -> list[Check]:
    return list(await asyncio.gather(*(probe_backend(b, wait_seconds) for b in backends)))


# --- streams -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageLag:
    stage: str  # "detect (files)"
    lag: int
    pending: int
    unknown: int  # streams whose lag Redis cannot tell


def lag_by_stage(health: Iterable[StreamHealth]) -> list[StageLag]:
    """Lag and pending summed over cameras for every group on every stream, in pipeline order."""
    sums: dict[tuple[str, str], list[int]] = {}
    order = list(StreamKind)
    for stream in sorted(health, key=lambda s: order.index(s.kind)):
        for group in stream.groups:
            spot = sums.setdefault((group.name, stream.kind.value), [0, 0, 0])
            spot[0] += group.lag or 0
            spot[1] += group.pending
            spot[2] += 1 if group.lag is None else 0
    return [
        StageLag(f"{group} ({kind})", lag, pending, unknown)
        for (group, kind), (lag, pending, unknown) in sums.items()
    ]


@dataclass(frozen=True)
class StageLatency:
    stage: str
    count: int | None
    p50: float | None  # seconds
    p95: float | None
    p99: float | None


def latency_rows(body: Any) -> list[StageLatency] | None:
    """`/api/pipeline/latency` as rows (the stages in order, then end to end), or None when the
    answer does not have that shape (the page then lists it with `flatten`)."""
    if not isinstance(body, dict) or not isinstance(body.get("stages"), dict):
        return None
    items = [*body["stages"].items(), ("end to end", body.get("end_to_end"))]
    rows = []
    for name, item in items:
        if not isinstance(item, dict):
            continue
        count = item.get("count")
        rows.append(
            StageLatency(
                str(name).replace("_", " "),
                count if isinstance(count, int) else None,
                *(_seconds(item.get(q)) for q in ("p50", "p95", "p99")),
            )
        )
    return rows


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Any JSON as (dotted name, text) rows, for answers whose shape this page does not know
    (such as `/api/pipeline/latency`)."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows.extend(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list):
        rows = []
        for index, item in enumerate(value):
            label = _item_label(item, index)
            rows.extend(flatten(item, f"{prefix}[{label}]" if prefix else f"[{label}]"))
        return rows
    if isinstance(value, float):
        return [(prefix, f"{value:.3f}".rstrip("0").rstrip("."))]
    return [(prefix, "–" if value is None else str(value))]


def _item_label(item: Any, index: int) -> str:
    if isinstance(item, dict):
        for key in ("stage", "name", "group", "stream", "camera_id", "id"):
            if isinstance(item.get(key), str):
                return str(item[key])
    return str(index)

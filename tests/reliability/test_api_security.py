"""The API's security properties, end to end: media paths that try to leave a camera's folder in
every encoding, the API key on every route of the router, rate limits under a burst, no SQL built
from strings, TLS floor and client certificates on a real server socket, and secrets that never
reach a log line or a response body."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import logging
import os
import shutil
import socket
import ssl
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from hsi.api.config import APIConfig, LiveConfig, RateLimits
from hsi.app.asgi import create_app
from hsi.infra.db import migrate
from hsi.infra.redis import RedisConfig
from hsi.infra.tls import TLSConfig, uvicorn_ssl_options
from hsi.logs.setup import LoggingConfig, log_event, reset_logging, setup_logging
from hsi.web.auth import COOKIE, KEY_FORM
from hsi.web.render import STATIC
from streams.analyzers import (
    AnalyzerResponseError,
    BatchSummary,
    DetectionLine,
    LLMAnalyzer,
    LLMConfig,
)
from tests.api.conftest import serve
from tests.api.rows import BASE, add_camera, detection_row, insert, media_row
from tests.api.server import running
from tests.conftest import PHOTOS, MakeConfig
from tests.fakes.llm import serve_fake_llm
from tests.hsi.test_tls import _make_ca_and_client as make_ca_and_client

KEY = "sec-test-key-7f3a9c"
MARKER = b"HSI-SECRET-MARKER-5b0d"  # appended to every file outside the cameras' folders
PASSWD = b"root:x:0:0"
REFUSED = {"error": "no such media file"}
NO_ROUTE = {"error": "no such route"}


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate(db_engine)
    return db_engine


# --- media paths ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    root: Path
    outside: Path  # a folder next to the camera root, holding secrets
    inside: bytes  # the content of the camera's own picture
    detection_ids: tuple[str, ...]  # detections whose stored path leads out


def _secret_jpeg(path: Path) -> Path:
    """A real JPEG (so a thumbnail could be made of it) that carries the marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((PHOTOS / "empty-rocket.jpg").read_bytes() + MARKER)
    return path


@pytest.fixture
async def tree(engine: AsyncEngine, tmp_path: Path) -> Tree:
    """Camera `front_door` with one picture; secrets next to the root; a symlinked file and a
    symlinked folder inside the camera's folder that lead out; camera `porch` whose folder is a
    symlink out of the root; detections whose stored paths lead out."""
    root = tmp_path / "cameras"
    snap = root / "Front Door" / "snap"
    snap.mkdir(parents=True)
    shutil.copy(PHOTOS / "cat-chelsea.jpg", snap / "cat 1.jpg")
    outside = tmp_path / "outside"
    _secret_jpeg(outside / "secret.jpg")
    _secret_jpeg(tmp_path / "secret.jpg")
    os.symlink(outside / "secret.jpg", snap / "out.jpg")
    os.symlink(outside, root / "Front Door" / "up")
    os.symlink(outside, root / "Porch")
    await add_camera(engine, "front_door", "Front Door")
    await add_camera(engine, "porch", "Porch")
    hostile = [
        "../secret.jpg",
        "Front Door/../../secret.jpg",
        "Front Door/snap/out.jpg",
        "Front Door/up/secret.jpg",
        str(outside / "secret.jpg"),
        "Front Door\\..\\..\\secret.jpg",
    ]
    files = [
        media_row("front_door", f"{i + 1}-0", path, BASE) for i, path in enumerate(hostile)
    ] + [media_row("porch", "9-0", "Porch/secret.jpg", BASE)]
    await insert(engine, "media_files", files)
    detections = [
        detection_row(f, f"d{i}", 0, "person", (10, 10, 50, 50), (640, 480))
        for i, f in enumerate(files)
    ]
    await insert(engine, "detections", detections)
    return Tree(
        root,
        outside,
        (snap / "cat 1.jpg").read_bytes(),
        tuple(str(d["id"]) for d in detections),
    )


async def raw_get(port: int, target: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The whole answer to `GET <target>` sent byte for byte (no client-side normalization)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [b"GET " + target + b" HTTP/1.1", b"Host: hsi.test", b"Connection: close"]
        lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


# Each is sent after `/api/media/front_door/`, `/ui/media/front_door/` and `/api/media/porch/`
# exactly as written, byte for byte.
ESCAPES = [
    # plain
    "../secret.jpg",
    "Front%20Door/../../secret.jpg",
    "../../outside/secret.jpg",
    "Front%20Door/snap/../../../outside/secret.jpg",
    "....//secret.jpg",
    # percent-encoded, partly or wholly
    "%2e%2e/secret.jpg",
    "%2e%2e%2fsecret.jpg",
    "..%2fsecret.jpg",
    ".%2e/secret.jpg",
    "%2e./secret.jpg",
    "%2E%2E%2F%2E%2E%2Foutside%2Fsecret.jpg",
    "Front%20Door%2f%2e%2e%2f%2e%2e%2fsecret.jpg",
    # double and triple encoding
    "%252e%252e%252fsecret.jpg",
    "%252e%252e/secret.jpg",
    "Front%20Door/%252e%252e%252f%252e%252e%252fsecret.jpg",
    "%25252e%25252e%25252fsecret.jpg",
    # backslashes, raw and encoded
    "..\\secret.jpg",
    "Front%20Door\\..\\..\\secret.jpg",
    "..%5csecret.jpg",
    "Front%20Door%5c..%5c..%5csecret.jpg",
    "%5c..%5csecret.jpg",
    "%255c..%255csecret.jpg",
    # absolute paths
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "%2f%2fetc%2fpasswd",
    "%5cetc%5cpasswd",
    "C:%5cWindows%5cwin.ini",
    "C:/Windows/win.ini",
    "file:///etc/passwd",
    "~/secret.jpg",
    # NUL bytes, encoded and raw
    "..\x00/secret.jpg",
    "secret.jpg%00",
    "..%00/secret.jpg",
    "%00../secret.jpg",
    "Front%20Door/snap/cat%201.jpg%00/../../../secret.jpg",
    "Front%20Door/snap/cat%201.jpg%00.png",
    # overlong UTF-8 of `.`, `/` and `\`
    "%c0%ae%c0%ae/secret.jpg",
    "%c0%ae%c0%ae%c0%afsecret.jpg",
    "%e0%80%ae%e0%80%ae/secret.jpg",
    "%f0%80%80%ae%f0%80%80%ae/secret.jpg",
    "..%c0%afsecret.jpg",
    "..%c1%9csecret.jpg",
    "%c0%2e%c0%2e/secret.jpg",
    # unicode lookalikes: fullwidth and small full stops, dot leaders, slashes
    "%ef%bc%8e%ef%bc%8e/secret.jpg",
    "%ef%b9%92%ef%b9%92/secret.jpg",
    "%e2%80%a5/secret.jpg",
    "%e2%80%a4%e2%80%a4/secret.jpg",
    "..%ef%bc%8fsecret.jpg",
    "..%e2%88%95secret.jpg",
    "..%e2%81%84secret.jpg",
    "..%ef%bc%bcsecret.jpg",
    # symlinks: a file and a folder inside the camera's folder that lead out of the root
    "Front%20Door/snap/out.jpg",
    "Front%20Door/up/secret.jpg",
    "Front%20Door/up/../secret.jpg",
    # the symlinked folder of another camera
    "Porch/secret.jpg",
]


def _refused(answer: bytes) -> str | None:
    """Why `answer` is not a proper refusal, or None."""
    if MARKER in answer or PASSWD in answer:
        return "leaked the file"
    status = status_of(answer)
    if status == 400:  # the server refused the request line itself
        return None
    if status != 404:
        return f"status {status}"
    body = body_of(answer)
    if json.loads(body) not in (REFUSED, NO_ROUTE):
        return f"body {body[:80]!r}"
    return None


async def test_no_media_path_leaves_the_camera_folder(tree: Tree, make_config: MakeConfig) -> None:
    """Every escape — dot segments plain, encoded, double and triple encoded, backslashes,
    absolute paths, NUL bytes, overlong UTF-8, unicode lookalikes, symlinked files and folders, a
    symlinked camera folder — is a 404 (or the server's 400) and never the file's bytes, on the
    API's media route and on the dashboard's."""
    config = make_config(api_key_enabled=True, api_keys=(SecretStr(KEY),))
    secret = quote(str(tree.outside / "secret.jpg"))
    targets = [*ESCAPES, secret, secret.replace("/", "%2f")]
    async with running(config) as client:
        port = client.base_url.port
        assert port is not None
        headers = {"X-API-Key": KEY}
        failures = []
        statuses: dict[int, int] = {}
        sent = 0
        for prefix in ("/api/media/front_door/", "/ui/media/front_door/", "/api/media/porch/"):
            good = await raw_get(port, prefix.encode() + b"Front%20Door/snap/cat%201.jpg", headers)
            if prefix.endswith("front_door/"):  # the control: the camera's own file is served
                assert status_of(good) == 200
                assert body_of(good) == tree.inside
            else:  # another camera's file under this camera's id
                assert _refused(good) is None
            for target in targets:
                answer = await raw_get(port, prefix.encode() + target.encode(), headers)
                sent += 1
                statuses[status_of(answer)] = statuses.get(status_of(answer), 0) + 1
                why = _refused(answer)
                if why is not None:
                    failures.append(f"{prefix}{target}: {why}")
        for detection_id in tree.detection_ids:  # stored paths that lead out: no thumbnail
            for prefix in ("/api/detections/", "/ui/thumbnails/"):
                suffix = "/thumbnail" if prefix.startswith("/api") else ""
                response = await client.get(f"{prefix}{detection_id}{suffix}", headers=headers)
                sent += 1
                if response.status_code != 404 or MARKER in response.content:
                    failures.append(f"thumbnail {detection_id}: {response.status_code}")
    print(f"media escapes: {sent} requests, statuses {sorted(statuses.items())}")
    assert not failures, "\n".join(failures)
    assert not (config.data_dir / "thumbnails").exists() or not any(
        (config.data_dir / "thumbnails").iterdir()
    )  # nothing was rendered from outside


# --- the API key on every route -------------------------------------------------------------------

# What answers without a key when keys are on, on purpose: probes and the descriptions
# (`hsi.api.security`), the dashboard's key form and its static files (`hsi.web.auth`). The
# form's POSTs run without a key too, but without a valid one they answer 401 (enter) or a
# redirect to the form (forget), so they count as refusing.
EXEMPT = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/ready"),  # only ready/not_ready without the key
        ("GET", "/ui/key"),
        ("GET", "/ui/static"),
    }
)
# The form's POSTs take the key in the body (enter) or need none (forget).
FORM_POSTS = frozenset({("POST", KEY_FORM), ("POST", f"{KEY_FORM}/forget")})
# Starlette answers HEAD wherever it answers GET.
EXEMPT_HEAD = frozenset(("HEAD", route) for method, route in EXEMPT if method == "GET")


@dataclass(frozen=True)
class Call:
    method: str
    route: str  # the route's path as the router has it
    url: str  # a concrete URL of that route that answers 2xx with the key


def _concrete(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace(f"{{{name}:path}}", value).replace(f"{{{name}}}", value)
    assert "{" not in path, f"no sample value for a parameter of {path}"
    return path


def _calls(config: APIConfig, values: dict[str, str]) -> list[Call]:
    """One call per method of every route and mount of the app's router."""
    app = create_app(config)
    calls = []
    for route in app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                calls.append(Call(method, route.path, _concrete(route.path, values)))
        elif isinstance(route, Mount):
            first = sorted(p.name for p in Path(STATIC).iterdir())[0]
            calls.append(Call("GET", route.path, f"{route.path}/{first}"))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return calls


def _let_in(response: httpx.Response) -> bool:
    """Whether the answer is the route's own (not a 401, not a redirect to the key form)."""
    if response.status_code == 401:
        return False
    location = response.headers.get("location", "")
    return not (response.status_code == 303 and location.startswith(KEY_FORM))


def _event_row(index: int) -> dict[str, object]:
    return {
        "id": uuid.UUID(int=index),
        "camera_id": "front_door",
        "batch_entry_id": f"{index}-0",
        "window_start": BASE,
        "window_end": BASE,
        "close_reason": "window",
        "detection_count": 1,
        "object_types": ["person"],
        "max_confidence": 0.9,
        "fast_path": False,
        "closed_at": BASE,
        "analysis_status": "completed",
        "risk_score": 10,
        "risk_level": "low",
        "summary": "a person",
    }


@pytest.fixture
async def keyed_rows(engine: AsyncEngine, tmp_path: Path) -> dict[str, str]:
    """Rows and a file so that every route has something to answer with the key."""
    snap = tmp_path / "cameras" / "Front Door" / "snap"
    snap.mkdir(parents=True)
    shutil.copy(PHOTOS / "cat-chelsea.jpg", snap / "cat 1.jpg")
    await add_camera(engine, "front_door", "Front Door")
    file = media_row("front_door", "1-0", "Front Door/snap/cat 1.jpg", BASE)
    await insert(engine, "media_files", [file])
    detection = detection_row(file, "d-1", 0, "person", (10, 10, 50, 50), (451, 300))
    await insert(engine, "detections", [detection])
    event = _event_row(1)
    await insert(engine, "events", [event])
    await insert(engine, "reanalysis_runs", [{"id": "run-1", "started_at": BASE}])
    return {
        "camera_id": "front_door",
        "run_id": "run-1",
        "event_id": str(event["id"]),
        "detection_id": str(detection["id"]),
        "path": "Front%20Door/snap/cat%201.jpg",
    }


async def test_every_route_needs_the_key(
    keyed_rows: dict[str, str], make_config: MakeConfig
) -> None:
    """With keys on, every route of the router — API, metrics, dashboard pages, fragments and
    pictures — refuses a request without the key or with a wrong one (401, or for a page a
    redirect to the key form), and lets the right key in; only the exact exempt set answers
    without one."""
    config = make_config(
        api_key_enabled=True,
        api_keys=(SecretStr("another-key-1234"), SecretStr(KEY)),
        live=LiveConfig(heartbeat_seconds=0.05, idle_timeout_seconds=0.1, block_seconds=0.05),
    )
    calls = _calls(config, keyed_rows)
    open_without_key: set[tuple[str, str]] = set()
    refused_with_key = []
    async with serve(config) as client:
        for call in calls:
            for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}):
                response = await client.request(call.method, call.url, headers=headers)
                if _let_in(response):
                    open_without_key.add((call.method, call.route))
            if (call.method, call.route) in FORM_POSTS:
                continue
            keyed = await client.request(call.method, call.url, headers={"X-API-Key": KEY})
            if not _let_in(keyed) or keyed.status_code >= 500:
                refused_with_key.append(f"{call.method} {call.url}: {keyed.status_code}")
        # the live feed's query-string key (for EventSource) is the only other way in
        assert (await client.get("/api/live", params={"api_key": "wrong"})).status_code == 401
        assert (await client.get("/api/live", params={"api_key": KEY})).status_code == 200
        assert (await client.get("/api/events", params={"api_key": KEY})).status_code == 401
        entered = await client.post(KEY_FORM, data={"api_key": KEY, "next": "/events"})
        assert entered.status_code == 303
        assert entered.headers["location"] == "/events"
        assert KEY not in entered.headers["set-cookie"]  # the cookie holds an HMAC, not the key
        assert (await client.get("/events")).status_code == 200  # the cookie lets pages in
        client.cookies.clear()
        client.cookies.set(COOKIE, KEY)  # the key itself is no cookie
        assert _let_in(await client.get("/events")) is False
    print(f"routes: {len(calls)} method/route pairs, {len(EXEMPT)} exempt")
    exempt = EXEMPT | (EXEMPT_HEAD - {("HEAD", "/ui/static")})  # the mount is asked GET only
    assert open_without_key == exempt
    assert not refused_with_key, refused_with_key
    assert {(c.method, c.route) for c in calls} >= exempt  # the exempt routes still exist


# --- rate limits ----------------------------------------------------------------------------------

BURST = 10  # requests per minute: a token comes back every 6 s, far longer than a burst takes


async def test_a_burst_beyond_the_limit_gets_429_with_retry_after(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """Under a real server, a concurrent burst of exactly the limit is served in full; past it
    every request gets 429 with a Retry-After within the refill time; guessing keys is limited
    too, by the address, and cannot spend the budget of the key holder at the same address (the
    key is checked before counting); media has its own bucket; /health is never limited."""
    config = make_config(
        api_key_enabled=True,
        api_keys=(SecretStr(KEY),),
        rate_limits=RateLimits(requests_per_minute=BURST, media_requests_per_minute=BURST),
    )
    headers = {"X-API-Key": KEY}
    async with running(config) as client:
        burst = await asyncio.gather(
            *(client.get("/api/cameras", headers=headers) for _ in range(BURST))
        )
        assert [r.status_code for r in burst] == [200] * BURST
        beyond = [
            await client.get("/api/cameras", headers=headers),
            await client.get("/metrics", headers=headers),
        ]
        assert [r.status_code for r in beyond] == [429, 429]
        guesses = [
            await client.get("/api/events", headers={"X-API-Key": f"guess-{n}"})
            for n in range(BURST + 1)
        ]
        assert [r.status_code for r in guesses] == [401] * BURST + [429]
        beyond.append(guesses[-1])
        for response in beyond:
            assert 1 <= int(response.headers["retry-after"]) <= 60 // BURST
            assert "rate limit" in response.json()["error"]
        media = await asyncio.gather(
            *(client.get("/api/media/front_door/x.jpg", headers=headers) for _ in range(BURST))
        )
        assert [r.status_code for r in media] == [404] * BURST  # its own bucket, still full
        assert (await client.get("/api/media/front_door/x.jpg", headers=headers)).status_code == 429
        probes = await asyncio.gather(*(client.get("/health") for _ in range(3 * BURST)))
        assert {r.status_code for r in probes} == {200}


async def test_guessing_keys_cannot_spend_the_key_holders_budget(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """One address guesses keys until it is limited; the key holder behind the same address (a
    shared NAT) is still served, and /ready without a key is limited with the guesses."""
    config = make_config(
        api_key_enabled=True,
        api_keys=(SecretStr(KEY),),
        rate_limits=RateLimits(requests_per_minute=BURST, media_requests_per_minute=BURST),
    )
    async with running(config) as client:
        answers = [
            (await client.get("/api/events", headers={"X-API-Key": f"guess-{n}"})).status_code
            for n in range(BURST)
        ]
        assert answers == [401] * BURST
        assert (await client.get("/api/events", headers={"X-API-Key": "guess"})).status_code == 429
        assert (await client.get("/ready")).status_code == 429
        assert (await client.get("/api/events", headers={"X-API-Key": KEY})).status_code == 200


# --- no SQL built from strings --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("hsi", "streams", "projections")
# Calls that take SQL text: sqlalchemy `text()`/`literal_column()`, psycopg `sql.SQL()`, and the
# execute family of connections, sessions and cursors.
SQL_FUNCTIONS = frozenset({"text", "literal_column", "SQL"})
SQL_METHODS = frozenset(
    {"execute", "executemany", "exec_driver_sql", "scalar", "scalars", "stream", "mogrify", "copy"}
    | SQL_FUNCTIONS
)
# Calls whose result is safe inside SQL text: quoted identifiers (`projections.tables`,
# psycopg's `sql.Identifier`/`sql.Literal`) and numbers.
SAFE_CALLS = frozenset({"quote_ident", "qualified", "Identifier", "Literal", "int", "float", "len"})
UNKNOWN = ast.Constant(value=None)  # a name bound to something the scan cannot see (a parameter)

# Values put into SQL text that are neither constants nor quoted, each read and justified:
# (file, function, the value's source) → why it cannot carry input.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("hsi/demo/sandbox.py", "_reset_servers", "box.schema"): (
        "the demo prefix, from STREAM_PREFIX validated by ^[a-z0-9_-]{1,32}$ ('-' → '_')"
    ),
    ("projections/shadow.py", "_copy_table", "definition"): (
        "pg_get_constraintdef() of the live table: DDL written by PostgreSQL itself"
    ),
    ("projections/shadow.py", "_copy_table", "privilege"): (
        "aclexplode() privilege_type of the live table: a keyword such as SELECT"
    ),
    ("projections/shadow.py", "_copy_table", "grantee"): (
        "quote_ident(pg_get_userbyid(...)) or PUBLIC, quoted by PostgreSQL in the same query"
    ),
    ("projections/shadow.py", "lock_live", "mode"): (
        "a lock mode keyword; its only callers pass the constants 'SHARE' / 'ACCESS EXCLUSIVE'"
    ),
    ("hsi/api/queries/search.py", "_statement", "SEARCH_DOCUMENT"): (
        "the constant search document expression of projections.tables"
    ),
    ("hsi/api/queries/search.py", "_statement", "LIST_COLUMNS"): (
        "the constant column list of the events listing (hsi.api.queries.events)"
    ),
    ("hsi/api/queries/search.py", "_statement", "FILTER_SQL"): (
        "the constant filter fragments of the events listing, every value a psycopg parameter"
    ),
    ("projections/bulk.py", "copy_sql", "map(sql.Identifier, columns)"): (
        "the column names of the static table metadata, each quoted by psycopg's sql.Identifier"
    ),
}


@dataclass(frozen=True)
class Unsafe:
    file: str
    function: str
    value: str  # the source of the value put into SQL text
    line: int


@dataclass
class Scope:
    file: str
    function: str
    names: dict[str, list[ast.expr]]
    parent: Scope | None = None

    def lookup(self, name: str) -> list[ast.expr] | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None


def _bind(names: dict[str, list[ast.expr]], target: ast.expr, value: ast.expr) -> None:
    if isinstance(target, ast.Name):
        names.setdefault(target.id, []).append(value)
    elif isinstance(target, ast.Tuple | ast.List):
        values = value.elts if isinstance(value, ast.Tuple | ast.List) else None
        for i, element in enumerate(target.elts):
            _bind(names, element, values[i] if values and i < len(values) else UNKNOWN)


def _bindings(node: ast.AST) -> dict[str, list[ast.expr]]:
    """What each name of a module or function body is bound to (parameters, loop and `with`
    targets and imports are UNKNOWN)."""
    names: dict[str, list[ast.expr]] = {}
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            names.setdefault(arg.arg, []).append(UNKNOWN)
    for child in _own_nodes(node):
        if isinstance(child, ast.Assign):
            for target in child.targets:
                _bind(names, target, child.value)
        elif isinstance(child, ast.AnnAssign | ast.AugAssign) and child.value is not None:
            _bind(names, child.target, child.value)
        elif isinstance(child, ast.For | ast.AsyncFor | ast.comprehension):
            _bind(names, child.target, UNKNOWN)
        elif isinstance(child, ast.withitem) and child.optional_vars is not None:
            _bind(names, child.optional_vars, UNKNOWN)
        elif isinstance(child, ast.NamedExpr):
            _bind(names, child.target, child.value)
    return names


def _own_nodes(node: ast.AST) -> list[ast.AST]:
    """The nodes of a body without those of nested functions and classes."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        out.append(child)
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(child))
    return out


class SqlScan:
    """Finds values put into SQL text that are neither constants nor quoted identifiers."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.trees = {file: ast.parse(source) for file, source in sources.items()}
        # function name → (file, definition), to follow `text(build_sql(...))`
        self.functions: dict[str, list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
        for file, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.functions.setdefault(node.name, []).append((file, node))
        self.modules = {
            file: Scope(file, "<module>", _bindings(tree)) for file, tree in self.trees.items()
        }
        self.found: set[Unsafe] = set()
        self.sinks = 0

    def run(self) -> set[Unsafe]:
        for file, tree in self.trees.items():
            self._visit(tree, self.modules[file])
        return self.found

    def _visit(self, node: ast.AST, scope: Scope) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                self._visit(child, Scope(scope.file, child.name, _bindings(child), scope))
                continue
            if isinstance(child, ast.Call) and self._is_sink(child) and child.args:
                self.sinks += 1
                self._built(child.args[0], scope, set())
            self._visit(child, scope)

    @staticmethod
    def _is_sink(call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Name):
            return func.id in SQL_FUNCTIONS
        return isinstance(func, ast.Attribute) and func.attr in SQL_METHODS

    def _built(self, node: ast.expr, scope: Scope, seen: set[int]) -> None:
        """Check `node` if it is SQL text built at run time (a plain name of unknown origin is
        not built here: whoever built it is checked where that happens)."""
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, ast.JoinedStr | ast.BinOp):
            self._safe(node, scope, seen)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
                self._safe(node, scope, seen)
            elif isinstance(func, ast.Name | ast.Attribute):
                name = func.id if isinstance(func, ast.Name) else func.attr
                for file, definition in self.functions.get(name, []):
                    inner = Scope(file, definition.name, _bindings(definition), self.modules[file])
                    for child in _own_nodes(definition):
                        if isinstance(child, ast.Return) and child.value is not None:
                            self._built(child.value, inner, seen)
        elif isinstance(node, ast.Name):
            for value in scope.lookup(node.id) or []:
                self._built(value, scope, seen)

    def _safe(self, node: ast.expr, scope: Scope, seen: set[int]) -> None:
        """Record every part of `node` that is neither a constant nor quoted (`seen`: the bound
        values already followed, so that `q = q + x` ends)."""
        if isinstance(node, ast.Constant):
            if node is UNKNOWN:
                raise AssertionError("UNKNOWN is resolved by the caller")
            return
        if isinstance(node, ast.JoinedStr):
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    self._safe(value.value, scope, seen)
            return
        if isinstance(node, ast.BinOp):
            self._safe(node.left, scope, seen)
            self._safe(node.right, scope, seen)
            return
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            for element in node.elts:
                self._safe(element, scope, seen)
            return
        if isinstance(node, ast.Dict):
            for value in node.values:
                self._safe(value, scope, seen)
            return
        if isinstance(node, ast.IfExp):
            self._safe(node.body, scope, seen)
            self._safe(node.orelse, scope, seen)
            return
        if isinstance(node, ast.Subscript):  # a value of a constant table
            self._safe(node.value, scope, seen)
            return
        if isinstance(node, ast.GeneratorExp | ast.ListComp):
            self._safe(node.elt, scope, seen)
            return
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in SAFE_CALLS:
                return
            if name == "SQL" and all(isinstance(a, ast.Constant) for a in node.args):
                return  # psycopg's `sql.SQL("…")` of a constant: composed with quoted parts
            if isinstance(func, ast.Attribute) and name in ("format", "join"):
                self._safe(func.value, scope, seen)
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    self._safe(arg, scope, seen)
                return
        if isinstance(node, ast.Name):
            bound = scope.lookup(node.id)
            if bound and all(value is not UNKNOWN for value in bound):
                for value in bound:
                    if id(value) not in seen:
                        seen.add(id(value))
                        self._safe(value, scope, seen)
                return
        self.found.add(Unsafe(scope.file, scope.function, ast.unparse(node), node.lineno))


def _sources() -> dict[str, str]:
    return {
        path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
        for package in SCANNED
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_no_sql_is_built_from_unquoted_values() -> None:
    """In hsi, streams and projections every value put into SQL text (f-string, %, +, .format,
    .join, directly or through a variable or a helper that returns the text) is a constant, a
    quoted identifier or a number — or one of the few read and justified in ALLOWED."""
    scan = SqlScan(_sources())
    found = scan.run()
    print(f"sql: {len(scan.trees)} files, {scan.sinks} SQL calls, {len(found)} unquoted values")
    unexplained = sorted(
        f"{u.file}:{u.line} {u.function}: {u.value}"
        for u in found
        if (u.file, u.function, u.value) not in ALLOWED
    )
    assert not unexplained, "values put into SQL text unquoted:\n" + "\n".join(unexplained)
    stale = set(ALLOWED) - {(u.file, u.function, u.value) for u in found}
    assert not stale, f"allowed values that are gone; drop them from ALLOWED: {sorted(stale)}"


@pytest.mark.parametrize(
    ("source", "unsafe"),
    [
        ("def f(x):\n    conn.execute(text(f'SELECT {x}'))", ["x"]),
        ("def f(x):\n    conn.execute(text('SELECT %s' % x))", ["x"]),
        ("def f(x):\n    conn.exec_driver_sql('SELECT ' + x)", ["x"]),
        ("def f(x):\n    cursor.execute('SELECT {}'.format(x))", ["x"]),
        ("def f(x):\n    q = f'SELECT {x}'\n    conn.execute(text(q))", ["x"]),
        ("def f(r):\n    conn.execute(sql.SQL(f'SELECT {r.name}'))", ["r.name"]),
        ("def g(x):\n    return f'SELECT {x}'\ndef f(y):\n    conn.execute(text(g(y)))", ["x"]),
        ("def f(xs):\n    conn.execute(text('IN (' + ', '.join(xs) + ')'))", ["xs"]),
        ("def f(x):\n    conn.execute(text(f'SELECT {quote_ident(x)}'))", []),
        ("def f(n):\n    conn.execute(text(f'LIMIT {int(n)}'))", []),
        ("T = 'events'\ndef f():\n    conn.execute(text(f'SELECT * FROM {T}'))", []),
        ("def f(s, x):\n    conn.execute(text(f'SELECT {qualified(x, s)}'), {'x': x})", []),
        ("def f(x):\n    conn.execute(text('SELECT :x'), {'x': f'{x}'})", []),
        ("def f(sql):\n    conn.execute(text(sql))", []),
    ],
)
def test_the_sql_scan_sees_through_the_usual_ways(source: str, unsafe: list[str]) -> None:
    """The scan itself: it catches each way of building SQL text, and leaves constants,
    quoted identifiers, numbers and bound parameters alone."""
    found = SqlScan({"m.py": source}).run()
    assert sorted(u.value for u in found) == unsafe


# --- TLS floor and client certificates on the API's own server ------------------------------------

TLS_VERSIONS = {
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def _client(trust: Path, version: str | None = None) -> ssl.SSLContext:
    """A client trusting `trust`, offering only `version` (TLS 1.1 needs OpenSSL's security
    level 0, which allows it again)."""
    context = ssl.create_default_context(cafile=trust)
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated
            context.minimum_version = TLS_VERSIONS[version]
            context.maximum_version = TLS_VERSIONS[version]
        if version == "TLSv1.1":
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _https_health(port: int, context: ssl.SSLContext) -> tuple[str | None, bytes]:
    """`GET /health` over TLS on a fresh connection: the protocol version and the answer."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := tls.recv(4096):
            chunks.append(chunk)
        return tls.version(), b"".join(chunks)


def _outcome(port: int, context: ssl.SSLContext) -> str:
    """The negotiated version, or why the connection was refused."""
    try:
        version, answer = _https_health(port, context)
    except ssl.SSLError as exc:
        return f"refused: {exc.reason}"
    except ConnectionError as exc:  # TLS 1.3 refuses a missing certificate after the handshake
        return f"refused: {type(exc).__name__}"
    if not answer.startswith(b"HTTP/1.1 200"):
        return f"refused: {answer[:40]!r}"
    return str(version)


def _tls11_control(trust: Path, certs: Path) -> str:
    """A handshake of the TLS 1.1 client with a server that allows TLS 1.1: proof that this
    machine's OpenSSL can still speak it, so a refusal comes from the server under test."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(certs / "hsi.crt", certs / "hsi.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with conn, server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            _client(trust, "TLSv1.1").wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            version = str(tls.version())
            tls.sendall(b"x")
        thread.join(5)
    return version


@pytest.mark.parametrize(
    ("floor", "accepted"),
    [("TLSv1.2", {"TLSv1.2", "TLSv1.3"}), ("TLSv1.3", {"TLSv1.3"})],
)
async def test_the_api_server_refuses_protocols_below_the_floor(
    make_config: MakeConfig, tmp_path: Path, floor: str, accepted: set[str]
) -> None:
    """The API app under uvicorn with HSI's TLS options: a client that offers only a version
    below TLS_MIN_VERSION (TLS 1.1, or 1.2 under a 1.3 floor) cannot connect; the others
    negotiate their version and get /health."""
    config = TLSConfig(mode="self_signed", cert_dir=tmp_path / "certs", min_version=floor)
    options = uvicorn_ssl_options(config)  # makes the certificate
    trust = tmp_path / "certs" / "hsi.crt"
    assert await asyncio.to_thread(_tls11_control, trust, tmp_path / "certs") == "TLSv1.1"
    async with running(make_config(), tls=options, verify=_client(trust)) as c:
        port = c.base_url.port
        assert port is not None
        seen = {
            version: await asyncio.to_thread(_outcome, port, _client(trust, version))
            for version in TLS_VERSIONS
        }
    print(f"tls floor {floor}: {seen}")
    for version, outcome in seen.items():
        if version in accepted:
            assert outcome == version
        else:
            assert outcome.startswith("refused"), (version, outcome)


async def test_the_api_server_requires_a_client_certificate_of_its_ca(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """With TLS_VERIFY_CLIENT the API's server refuses a client without a certificate and one
    whose certificate another CA signed; a certificate of TLS_CA_PATH's CA gets through."""
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ca, cert, key = make_ca_and_client(tmp_path / "ours")
    _, foreign_cert, foreign_key = make_ca_and_client(tmp_path / "theirs")
    config = TLSConfig(
        mode="self_signed", cert_dir=tmp_path / "certs", verify_client=True, ca_path=ca
    )
    options = uvicorn_ssl_options(config)  # makes the certificate
    trust = tmp_path / "certs" / "hsi.crt"
    client = _client(trust)
    client.load_cert_chain(cert, key)
    async with running(make_config(), tls=options, verify=client) as c:
        assert (await c.get("/health")).status_code == 200
        port = c.base_url.port
        assert port is not None
        without = await asyncio.to_thread(_outcome, port, _client(trust))
        foreign = _client(trust)
        foreign.load_cert_chain(foreign_cert, foreign_key)
        other_ca = await asyncio.to_thread(_outcome, port, foreign)
        for version in ("TLSv1.2", "TLSv1.3"):  # also refused on the older protocol
            old = _client(trust, version)
            assert (await asyncio.to_thread(_outcome, port, old)).startswith("refused")
            old.load_cert_chain(cert, key)
            assert await asyncio.to_thread(_outcome, port, old) == version
    assert without.startswith("refused"), without
    assert other_ca.startswith("refused"), other_ca


# --- secrets never in logs or error bodies --------------------------------------------------------

DB_PASSWORD = "pg-pw-4c1e9b20"
REDIS_PASSWORD = "redis-pw-81f2aa07"
LLM_KEY = "llm-key-d93b0e7715aa"
OTHER_KEY = "sec-other-key-55e1d2"
SECRETS = (KEY, OTHER_KEY, DB_PASSWORD, REDIS_PASSWORD, LLM_KEY)


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """HSI's JSON logging at DEBUG on the root logger, written to a buffer."""
    buffer = io.StringIO()
    setup_logging(LoggingConfig(level="DEBUG", format="json"), stream=buffer)
    yield buffer
    reset_logging()


@contextmanager
def uvicorn_logs_to_root() -> Iterator[None]:
    """uvicorn's loggers hand their records to the root logger, as under `hsi up` (a server
    started with uvicorn's default log config, like the fakes', gives them handlers of their
    own)."""
    saved = [
        (logger, logger.handlers[:], logger.propagate, logger.level)
        for logger in map(logging.getLogger, UVICORN_LOGGERS)
    ]
    for logger, *_ in saved:
        logger.handlers, logger.propagate, logger.level = [], True, logging.NOTSET
    try:
        yield
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate, logger.level = handlers, propagate, level


async def _llm_failure(llm_url: str) -> str:
    """The error the real LLM analyzer raises when a proxy in front of the model answers with a
    page that quotes the request's Authorization header."""
    analyzer = LLMAnalyzer(LLMConfig(base_url=llm_url, api_key=LLM_KEY, max_retries=0))
    try:
        with pytest.raises(AnalyzerResponseError) as caught:
            await analyzer.analyze(
                BatchSummary(
                    camera="Front Door",
                    window_start=BASE,
                    window_end=BASE,
                    detections=(DetectionLine("person", 0.9, BASE, "a.jpg"),),
                    timezone="UTC",
                )
            )
    finally:
        await analyzer.aclose()
    return str(caught.value)


async def _provoke(
    config: APIConfig, app: Starlette, down_config: APIConfig
) -> dict[str, httpx.Response]:
    """Every failure the secrets test looks at, by name."""
    key = {"X-API-Key": KEY}
    async with running(config, app=app, log_level=None) as client:
        answers = {
            "db works with the password": await client.get("/api/cameras", headers=key),
            "event with the llm error": await client.get(
                f"/api/events/{uuid.UUID(int=1)}", headers=key
            ),
            "redis unreachable": await client.get("/api/streams", headers=key),
            "live, redis unreachable": await client.get("/api/live", params={"api_key": KEY}),
            "ready": await client.get("/ready"),
            "no key": await client.get("/api/events"),
            "wrong key": await client.get("/api/events", headers={"X-API-Key": KEY + "x"}),
            "key in the query": await client.get("/api/events", params={"api_key": KEY}),
            "400": await client.get("/api/events", headers=key, params={"limit": "ten"}),
            "404": await client.get("/api/nothing", headers=key),
            "405": await client.post("/api/events", headers=key, content=KEY),
            "500": await client.get("/api/crash", headers=key),
        }
    async with running(down_config, log_level=None) as client:
        answers["db unreachable"] = await client.get("/api/cameras", headers=key)
        answers["db unreachable, ready"] = await client.get("/ready")
    return answers


async def test_secrets_never_reach_logs_or_error_bodies(
    engine: AsyncEngine, make_config: MakeConfig, database_url: str, json_logs: io.StringIO
) -> None:
    """With a password in DATABASE_URL and REDIS_URL, two API keys and an LLM key configured,
    every provoked failure — Redis unreachable, PostgreSQL unreachable, a missing or
    wrong key, the key in a query string, 400/404/405, a 500 whose exception quotes the URLs, an
    LLM error quoting the Authorization header stored as an event's analysis error — leaves no
    secret in any response body or JSON log line."""
    with serve_fake_llm() as (fake, llm_url):
        fake.answer_garbage(
            f"<html>502 upstream; request: Authorization: Bearer {LLM_KEY}</html>".encode()
        )
        llm_error = await _llm_failure(llm_url)
    assert LLM_KEY in llm_error  # the analyzer quotes what the server said
    log_event(logging.getLogger("hsi.analyze"), "analyze.failed", error=llm_error)
    await insert(
        engine,
        "events",
        [{**_event_row(1), "analysis_status": "failed", "analysis_error": llm_error[:500]}],
    )
    # the embedded PostgreSQL has a password of its own, which must not leak either; a server
    # that trusts local users takes the test's
    real = make_url(database_url).password
    db_url = make_url(database_url).set(password=real or DB_PASSWORD).render_as_string(False)
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{_closed_port()}/0"
    down = f"postgresql+psycopg://hsi:{DB_PASSWORD}@127.0.0.1:{_closed_port()}/hsi"
    keys = (SecretStr(OTHER_KEY), SecretStr(KEY))
    config = make_config(
        database_url=db_url,
        redis=RedisConfig(url=redis_url, retry_attempts=0),
        api_key_enabled=True,
        api_keys=keys,
    )
    app = create_app(config)

    async def crash(_: Request) -> Response:
        raise RuntimeError(
            f"lost {db_url} and {redis_url}; Authorization: Bearer {LLM_KEY}; api_key={KEY}"
        )

    app.router.routes.append(Route("/api/crash", crash))
    down_config = make_config(
        database_url=down, api_key_enabled=True, api_keys=keys, redis=config.redis
    )
    with uvicorn_logs_to_root():
        answers = await _provoke(config, app, down_config)
    bodies = [r.content for r in answers.values()]
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "db works with the password": 200,
        "event with the llm error": 200,
        "redis unreachable": 503,
        "live, redis unreachable": 503,
        "ready": 503,
        "no key": 401,
        "wrong key": 401,
        "key in the query": 401,
        "400": 400,
        "404": 404,
        "405": 405,
        "500": 500,
        "db unreachable": 503,
        "db unreachable, ready": 503,
    }
    assert answers["event with the llm error"].json()["analysis_error"].count("***") >= 1
    logs = json_logs.getvalue()
    records = [json.loads(line) for line in logs.splitlines()]
    events = {r.get("event") or r["message"][:40] for r in records}
    print(f"secrets: {len(bodies)} bodies, {len(records)} log records")
    assert any("RuntimeError: lost" in str(r.get("exception")) for r in records), events
    access = [r["message"] for r in records if r["logger"] == "uvicorn.access"]
    assert any("/api/live?api_key=*** " in line for line in access), access
    leaks = [
        (secret, where)
        for secret in (*SECRETS, *([real] if real else []))
        for where, text in [("logs", logs), *((f"body {i}", b) for i, b in enumerate(bodies))]
        if (secret.encode() if isinstance(text, bytes) else secret) in text
    ]
    assert not leaks, leaks


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("table", "field", "path"),
    [
        ("alerts", "error", "/api/alerts"),
        ("dead_letters", "last_error", "/api/dead-letters"),
    ],
)
async def test_stored_error_texts_are_served_with_secrets_masked(
    engine: AsyncEngine, make_config: MakeConfig, table: str, field: str, path: str
) -> None:
    """An alert's delivery error or a dead letter's last error quoting a URL with its password,
    a bearer token or a key=value secret is served masked; the rest of the text stays."""
    error = (
        f"POST https://hooks:{DB_PASSWORD}@hooks.example/x failed; "
        f"Authorization: Bearer {LLM_KEY}; smtp password={REDIS_PASSWORD}"
    )
    if table == "alerts":
        row: dict[str, object] = {
            "id": uuid.UUID(int=7),
            "camera_id": "front_door",
            "entry_id": "1-0",
            "event_id": uuid.UUID(int=1),
            "analysis_entry_id": "1-1",
            "rule": "risk",
            "channel": "webhook",
            "status": "failed",
            "reason": "delivery_error",
            "attempt": 1,
            "error": error,
            "idempotency_key": "k",
            "delivered_at": None,
            "recorded_at": BASE,
        }
    else:
        row = {
            "camera_id": "front_door",
            "dead_entry_id": "9-0",
            "source_stream": "hsi:{front_door}:alerts",
            "entry_id": "3-0",
            "group_name": "notify",
            "deliveries": 5,
            "last_error": error,
            "original_type": "alert.requested",
            "dead_at": BASE,
        }
    await insert(engine, table, [row])
    async with serve(make_config()) as client:
        response = await client.get(path)
    assert response.status_code == 200
    served = response.json()["items"][0][field]
    assert served.startswith("POST https://hooks:***@hooks.example/x failed")
    for secret in (DB_PASSWORD, LLM_KEY, REDIS_PASSWORD):
        assert secret not in response.text

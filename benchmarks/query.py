"""B4 query: `GET /api/events` with typical filters and cursor paging, 50 concurrent clients.

The events table holds `N` events over 8 cameras (one `INSERT … SELECT generate_series`,
then ANALYZE). A request plan is made once: each scenario (the first page, a camera, high and
critical risk, a minimum score, an object type, one day, camera + level + type) with its first
three pages, following `next_cursor`. Every client walks the plan from its own offset.

HSI: the API in a process of its own (`benchmarks.apiserver`: `hsi up`'s telemetry, logging and
uvicorn options; rate limits off), driven over loopback by 50 clients in this process, each with
a keep-alive connection (`benchmarks.http`: httpx would cost this process more CPU per request
than the API spends, on the same two cores).

Floor: the very SQL the API runs for each request of the plan (captured from `list_events`
with SQLAlchemy's `before_cursor_execute`), sent by 50 tasks through a psycopg pool of 30
connections (the API's pool of 30) whose sessions are the API's (autocommit, as the API reads:
no BEGIN and COMMIT around each statement; its TimeZone), rows fetched, no HTTP, no JSON.

Two loads: saturation (each client sends its next request as soon as it has the answer: the
requests/s figure; latencies there are queueing by Little's law) and a paced load of 50
requests/s spread over the 50 clients, each asking once a second (the latency figures).

Search: `GET /api/events?q=person` (half the events have a person among their object types) and
its next two pages, asked one at a time by one client: the median latency, beside the same SQL
(`search_events`' camera lookup and ranked query, captured the same way) through one psycopg
connection. A frequent word is the hard case of a ranked search: every match is ranked before
the first page is known.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.apiserver import serve
from benchmarks.environment import Servers, fresh_schema
from benchmarks.http import Connection
from benchmarks.options import Options
from benchmarks.report import Figure, Target, cost, median, percentile, rate, record
from hsi.api.cursor import decode_cursor
from hsi.api.params import Query, parse_limit
from hsi.api.queries import events as q
from hsi.api.queries.search import EventSearch, search_events
from hsi.api.routes.events import event_filters
from hsi.app.asgi import API_TIMEZONE
from hsi.infra.db import create_engine

NAME = "query"
CLIENTS = 50
POOL = 30  # the API engine's pool: 30 connections kept open
PAGES = 3
PACED_RATE = 50.0  # requests/s over all clients: each polls once a second
SEARCH = "person"

FILL = """
INSERT INTO events (id, camera_id, batch_entry_id, window_start, window_end, close_reason,
    detection_count, object_types, max_confidence, fast_path, closed_at, analysis_status,
    risk_score, risk_level, summary)
SELECT md5(i::text)::uuid,
       'camera_' || (i % 8),
       i || '-0',
       timestamptz '2026-01-10 12:00:00+00' - (i / 4) * interval '1 minute',
       timestamptz '2026-01-10 12:01:00+00' - (i / 4) * interval '1 minute',
       'window', 1 + i % 5,
       CASE i % 4 WHEN 0 THEN ARRAY['person'] WHEN 1 THEN ARRAY['car']
                  WHEN 2 THEN ARRAY['dog', 'person'] ELSE ARRAY['cat'] END,
       0.5 + (i % 50) / 100.0, false,
       timestamptz '2026-01-10 12:01:00+00' - (i / 4) * interval '1 minute',
       CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'completed' END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE (i * 37) % 101 END,
       CASE WHEN i % 10 = 0 THEN NULL
            WHEN (i * 37) % 101 <= 29 THEN 'low' WHEN (i * 37) % 101 <= 59 THEN 'medium'
            WHEN (i * 37) % 101 <= 84 THEN 'high' ELSE 'critical' END,
       'event ' || i
FROM generate_series(1, :n) AS i
"""

SCENARIOS: tuple[dict[str, str], ...] = (
    {},
    {"camera_id": "camera_3"},
    {"risk_level": "high,critical"},
    {"min_score": "90"},
    {"object_type": "dog"},
    {"since": "2026-01-05T00:00:00Z", "until": "2026-01-06T00:00:00Z"},
    {"camera_id": "camera_2", "risk_level": "high", "object_type": "person"},
)
_ACCEPTED = frozenset(
    {"camera_id", "risk_level", "min_score", "object_type", "since", "until", "cursor", "limit"}
    | {"analysis_status"}
)


def session(schema: str) -> dict[str, Any]:
    """The floor's connection settings: the API's sessions (`hsi.app.asgi.create_app`)."""
    return {"autocommit": True, "options": f"-c search_path={schema} -c TimeZone={API_TIMEZONE}"}


@dataclass(frozen=True)
class Request:
    """One request of the plan: its query string, and the SQL the API sends for it."""

    params: dict[str, str]
    sql: str
    sql_params: dict[str, Any]


@dataclass(frozen=True)
class Search:
    """One request of the search plan: its query string, and every statement the API sends."""

    params: dict[str, str]
    statements: list[tuple[str, dict[str, Any]]]


def events_count(options: Options) -> int:
    return options.pick(full=1_000_000, quick=100_000, smoke=2_000)


def request_count(options: Options) -> int:
    return options.pick(full=2_000, quick=1_500, smoke=60)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def fill(servers: Servers, schema: str, count: int) -> None:
    engine = create_engine(servers.database_url, schema=schema)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(FILL), {"n": count})
            await conn.execute(text("ANALYZE events"))
    finally:
        await engine.dispose()


def _capturing(
    servers: Servers, schema: str
) -> tuple[AsyncEngine, list[tuple[str, dict[str, Any]]]]:
    """An engine on `schema` and the list it appends each statement it sends to, with its
    parameters (SQLAlchemy's `before_cursor_execute`)."""
    engine = create_engine(servers.database_url, schema=schema)
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, dict(parameters or {})))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    return engine, captured


async def plan(servers: Servers, schema: str) -> list[Request]:
    """Every scenario's first pages, with the SQL `list_events` sends for each."""
    engine, captured = _capturing(servers, schema)
    requests: list[Request] = []
    try:
        async with engine.connect() as conn:
            for scenario in SCENARIOS:
                params = dict(scenario)
                for _ in range(PAGES):
                    query = Query(params.items(), _ACCEPTED)
                    token = query.get("cursor")
                    after = None if token is None else decode_cursor(token, q.CURSOR_KIND, 1)
                    captured.clear()
                    page = await q.list_events(
                        conn, event_filters(query), parse_limit(query.get("limit")), after
                    )
                    statement, parameters = captured[-1]
                    requests.append(Request(dict(params), statement, parameters))
                    if page.next_cursor is None:
                        break
                    params = {**scenario, "cursor": page.next_cursor}
    finally:
        await engine.dispose()
    return requests


async def search_plan(servers: Servers, schema: str) -> list[Search]:
    """`q=SEARCH` and its next pages, with the statements `search_events` sends for each."""
    engine, captured = _capturing(servers, schema)
    found = EventSearch(SEARCH, "english")
    requests: list[Search] = []
    params = {"q": SEARCH}
    try:
        async with engine.connect() as conn:
            for _ in range(PAGES):
                token = params.get("cursor")
                after = None if token is None else decode_cursor(token, found.cursor_kind, 2)
                captured.clear()
                page = await search_events(conn, q.EventFilters(), found, 50, after)
                requests.append(Search(dict(params), list(captured)))
                if page.next_cursor is None:
                    break
                params = {"q": SEARCH, "cursor": page.next_cursor}
    finally:
        await engine.dispose()
    return requests


async def measure_search_hsi(base: str, requests: Sequence[Search], total: int) -> list[float]:
    connection = await Connection(base).open()
    latencies: list[float] = []
    try:
        for number in range(total + len(requests)):  # the first pass warms up
            request = requests[number % len(requests)]
            sent = time.perf_counter()
            await connection.get("/api/events", request.params)
            if number >= len(requests):
                latencies.append((time.perf_counter() - sent) * 1000)
    finally:
        await connection.close()
    return latencies


async def measure_search_floor(
    conninfo: str, settings: dict[str, Any], requests: Sequence[Search], total: int
) -> list[float]:
    latencies: list[float] = []
    async with await AsyncConnection.connect(conninfo, **settings) as conn:
        for number in range(total + len(requests)):
            request = requests[number % len(requests)]
            sent = time.perf_counter()
            for statement, parameters in request.statements:
                async with conn.cursor() as cur:
                    await cur.execute(statement, parameters)
                    await cur.fetchall()
            if number >= len(requests):
                latencies.append((time.perf_counter() - sent) * 1000)
    return latencies


@dataclass
class Load:
    """What one load run measured."""

    latencies_ms: list[float]
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds


async def drive(
    call: Callable[[Request], Awaitable[None]],
    requests: Sequence[Request],
    total: int,
    *,
    rate: float | None = None,
    clients: int = CLIENTS,
    max_seconds: float = 120.0,
) -> Load:
    """`total` calls by `clients` concurrent clients, each walking the plan from its own offset;
    as fast as answers come (`rate` None), or one call every 1/`rate` s over all clients."""
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client(offset: int) -> None:
        nonlocal issued
        step = 0
        while issued < total and time.perf_counter() < deadline:
            number = issued
            issued += 1
            if rate is not None:
                delay = started + number / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            request = requests[(offset + step) % len(requests)]
            step += 1
            sent = time.perf_counter()
            await call(request)
            latencies.append((time.perf_counter() - sent) * 1000)

    await asyncio.gather(*(client(i * 3) for i in range(clients)))
    return Load(latencies, time.perf_counter() - started)


async def measure_hsi(
    base: str, requests: Sequence[Request], total: int, rate: float | None
) -> Load:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    connections = [await Connection(base).open() for _ in range(CLIENTS)]
    for connection in connections:
        idle.put_nowait(connection)

    async def call(request: Request) -> None:
        connection = await idle.get()
        try:
            await connection.get("/api/events", request.params)
        finally:
            idle.put_nowait(connection)

    try:
        await drive(call, requests[:CLIENTS], CLIENTS)  # warm up: connections, caches
        return await drive(call, requests, total, rate=rate)
    finally:
        for connection in connections:
            await connection.close()


async def measure_floor(
    conninfo: str,
    settings: dict[str, Any],
    requests: Sequence[Request],
    total: int,
    rate: float | None,
) -> Load:
    async with AsyncConnectionPool(
        conninfo, min_size=POOL, max_size=POOL, open=False, kwargs=settings
    ) as pool:
        await pool.wait()

        async def call(request: Request) -> None:
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(request.sql, request.sql_params)
                await cur.fetchall()

        await drive(call, requests[:CLIENTS], CLIENTS)
        return await drive(call, requests, total, rate=rate)


def run(servers: Servers, options: Options) -> list[Figure]:
    count = events_count(options)
    total = request_count(options)
    paced_total = options.pick(full=500, quick=200, smoke=20)
    label = f"{count} events, {CLIENTS} clients"
    throughput = rate(
        "B4",
        f"/api/events requests/s at saturation ({label})",
        "req/s",
        target=Target(min_ratio=0.5),
        note="closed loop: each client asks again as soon as it has the answer; floor: the "
        "same SQL through psycopg (pool of 30), no HTTP/JSON",
    )
    saturated_p99 = cost(
        "B4",
        "/api/events p99 at saturation",
        "ms",
        note="queueing: 50 requests always in flight, so p50 ≈ 50 / (requests/s)",
    )
    paced_p50 = cost("B4", f"/api/events p50 at {PACED_RATE:.0f} req/s", "ms")
    paced_p99 = cost(
        "B4",
        f"/api/events p99 at {PACED_RATE:.0f} req/s",
        "ms",
        target=Target(max_value=20.0),
        note=f"{PACED_RATE:.0f} requests/s spread over {CLIENTS} clients; typical filters, "
        f"first {PAGES} pages of each",
    )
    search_total = options.pick(full=60, quick=30, smoke=6)
    search_p50 = cost(
        "B4",
        f"/api/events?q={SEARCH} p50, one client ({count} events)",
        "ms",
        note=f"ranked full-text search, first {PAGES} pages, one request at a time; half the "
        "events match; floor: the same statements through one psycopg connection",
    )
    figures = [throughput, saturated_p99, paced_p50, paced_p99, search_p50]

    async def body() -> None:
        async with fresh_schema(servers) as schema:
            await fill(servers, schema, count)
            requests = await plan(servers, schema)
            searches = await search_plan(servers, schema)
            conninfo, settings = servers.conninfo(schema), session(schema)
            with serve(servers.database_url, schema, servers.redis_url, free_port()) as base:
                for index in range(options.rounds):

                    async def hsi() -> tuple[Load, Load, list[float]]:
                        return (
                            await measure_hsi(base, requests, total, None),
                            await measure_hsi(base, requests, paced_total, PACED_RATE),
                            await measure_search_hsi(base, searches, search_total),
                        )

                    async def floor() -> tuple[Load, Load, list[float]]:
                        return (
                            await measure_floor(conninfo, settings, requests, total, None),
                            await measure_floor(
                                conninfo, settings, requests, paced_total, PACED_RATE
                            ),
                            await measure_search_floor(conninfo, settings, searches, search_total),
                        )

                    order = [hsi, floor] if index % 2 == 0 else [floor, hsi]
                    results: dict[
                        Callable[[], Awaitable[tuple[Load, Load, list[float]]]],
                        tuple[Load, Load, list[float]],
                    ] = {}
                    for measure in order:
                        results[measure] = await measure()
                    for side, (saturated, paced, searched) in results.items():
                        values = (
                            saturated.rate,
                            percentile(saturated.latencies_ms, 0.99),
                            median(paced.latencies_ms),
                            percentile(paced.latencies_ms, 0.99),
                            median(searched),
                        )
                        record(figures, values, floor=side is floor)

    asyncio.run(body())
    return figures

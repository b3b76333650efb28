"""Health, metrics, OpenAPI, read-only methods, API keys, rate limits and CORS."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from hsi.api.openapi import openapi_path
from hsi.app.asgi import ENDPOINTS, LiveConfig, RateLimits, create_app
from hsi.infra.redis import RedisConfig
from tests.api.conftest import MakeConfig, serve

KEY = "k3y-for-tests"


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    """/health answers ok; /metrics is Prometheus text."""
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/api/events", "/api/cameras/x", "/health"])
async def test_no_route_writes(client: httpx.AsyncClient, method: str, path: str) -> None:
    """Every route is read-only: other methods are a JSON 405."""
    response = await client.request(method, path)
    assert response.status_code == 405
    assert "read-only" in response.json()["error"]


async def test_unknown_routes_are_json_404(client: httpx.AsyncClient) -> None:
    """An unknown path is a JSON 404, also with a trailing slash (no redirects)."""
    for path in ("/api/nothing", "/api/events/"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json() == {"error": "no such route"}


async def test_openapi_describes_every_route_and_parameter(
    client: httpx.AsyncClient, make_config: MakeConfig
) -> None:
    """openapi.json lists every route of the app with its parameters."""
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    app = create_app(make_config())
    routes = {
        openapi_path(r.path)
        for r in app.routes
        if isinstance(r, Route) and not r.endpoint.__module__.startswith("hsi.web")
    }  # the dashboard's HTML pages are not part of the JSON API
    assert routes == set(doc["paths"])
    assert len(routes) == len(ENDPOINTS)
    assert routes == {
        "/health", "/ready", "/metrics", "/openapi.json", "/asyncapi.json",
        "/api/cameras", "/api/cameras/{camera_id}",
        "/api/events", "/api/events/stats", "/api/events/{event_id}",
        "/api/events/{event_id}/export", "/api/alerts",
        "/api/reanalyses", "/api/reanalyses/{run_id}",
        "/api/detections", "/api/detections/{detection_id}/thumbnail",
        "/api/media/{camera_id}/{path}",
        "/api/streams", "/api/dead-letters", "/api/pipeline/latency", "/api/live",
    }  # fmt: skip
    events = doc["paths"]["/api/events"]["get"]
    names = {p["name"] for p in events["parameters"]}
    assert names == {
        "q", "camera_id", "risk_level", "min_score", "object_type", "zone", "since", "until",
        "analysis_status", "limit", "cursor",
    }  # fmt: skip
    media = doc["paths"]["/api/media/{camera_id}/{path}"]["get"]
    assert {p["name"] for p in media["parameters"] if p["in"] == "path"} == {"camera_id", "path"}
    for path, item in doc["paths"].items():
        operation = item["get"]
        assert operation["summary"], path
        assert "200" in operation["responses"], path


@pytest.fixture
async def keyed(engine: AsyncEngine, make_config: MakeConfig) -> AsyncIterator[httpx.AsyncClient]:
    config = make_config(
        api_key_enabled=True,
        api_keys=(SecretStr("another"), SecretStr(KEY)),
        live=LiveConfig(idle_timeout_seconds=0.2, block_seconds=0.1, heartbeat_seconds=0.1),
    )
    async with serve(config) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/api/cameras",
        "/api/events",
        "/api/streams",
        "/metrics",
        "/api/events/stats",
        "/openapi.json",
        "/asyncapi.json",
    ],
)
async def test_keys_guard_the_api_and_metrics(keyed: httpx.AsyncClient, path: str) -> None:
    """With keys on, /api/*, /metrics and the API documents need X-API-Key: 401 JSON without or
    with a wrong one."""
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        response = await keyed.get(path, headers=headers)
        assert response.status_code == 401, path
        assert "API key" in response.json()["error"]
    assert (await keyed.get(path, headers={"X-API-Key": KEY})).status_code == 200
    # the query-string key is for the live feed only
    assert (await keyed.get(path, params={"api_key": KEY})).status_code == 401


async def test_probes_answer_without_the_key_but_say_nothing_more(
    keyed: httpx.AsyncClient,
) -> None:
    """/health and /ready answer a probe without the key; /ready's numbers (camera count, lag,
    the Redis version) only with it."""
    assert (await keyed.get("/health")).status_code == 200
    bare = await keyed.get("/ready")
    assert bare.status_code in (200, 503)
    assert bare.json() == {"status": "ready" if bare.status_code == 200 else "not_ready"}
    full = (await keyed.get("/ready", headers={"X-API-Key": KEY})).json()
    assert set(full["checks"]) >= {"redis", "postgres", "migrations"}
    assert "version" in full["checks"]["redis"]
    doc = (await keyed.get("/openapi.json", headers={"X-API-Key": KEY})).json()
    assert doc["paths"]["/api/events"]["get"]["security"] == [{"ApiKey": []}]
    assert "security" not in doc["paths"]["/ready"]["get"]


async def test_metrics_open_by_setting(engine: AsyncEngine, make_config: MakeConfig) -> None:
    """API_METRICS_OPEN lets a scraper without the key read /metrics, and nothing else."""
    config = make_config(api_key_enabled=True, api_keys=(SecretStr(KEY),), metrics_open=True)
    async with serve(config) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/api/events")).status_code == 401
        assert (await client.get("/openapi.json")).status_code == 401


async def test_live_feed_accepts_the_key_in_the_query(keyed: httpx.AsyncClient) -> None:
    """EventSource cannot send headers: /api/live takes ?api_key= (and the header)."""
    assert (await keyed.get("/api/live")).status_code == 401
    assert (await keyed.get("/api/live", params={"api_key": "wrong"})).status_code == 401
    response = await keyed.get("/api/live", params={"api_key": KEY})  # ends at the idle timeout
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert ": connected" in response.text
    assert (await keyed.get("/api/live", headers={"X-API-Key": KEY})).status_code == 200


async def test_rate_limits_answer_429_with_retry_after(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """Past the per-minute budget a client gets 429 with Retry-After; media has its own."""
    limits = RateLimits(requests_per_minute=3, media_requests_per_minute=2)
    async with serve(make_config(rate_limits=limits)) as client:
        codes = [(await client.get("/api/cameras")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = await client.get("/api/events")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["error"]
        assert (await client.get("/health")).status_code == 200  # probes are not limited
        media = [
            (await client.get("/api/media/front_door/Front%20Door/x.jpg")).status_code
            for _ in range(3)
        ]
        assert media == [404, 404, 429]


async def test_rate_limits_off(client: httpx.AsyncClient) -> None:
    """With rate limits disabled nothing is refused."""
    codes = {(await client.get("/health")).status_code for _ in range(50)}
    assert codes == {200}


async def test_cors_headers_for_configured_origins(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """Configured origins get CORS headers (preflight too, even with keys on); others do not."""
    config = make_config(
        cors_origins=("https://app.example",), api_key_enabled=True, api_keys=(SecretStr(KEY),)
    )
    async with serve(config) as client:
        allowed = await client.get(
            "/api/cameras", headers={"Origin": "https://app.example", "X-API-Key": KEY}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        preflight = await client.options(
            "/api/cameras",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert preflight.status_code == 200
        other = await client.get(
            "/api/cameras", headers={"Origin": "https://evil.example", "X-API-Key": KEY}
        )
        assert "access-control-allow-origin" not in other.headers
        refused = await client.get("/api/cameras", headers={"Origin": "https://app.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.example"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_servers_are_503_json(make_config: MakeConfig) -> None:
    """Without PostgreSQL or Redis the routes answer 503 JSON and /ready says why."""
    config = make_config(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/hsi",
        redis=RedisConfig(url=f"redis://127.0.0.1:{_closed_port()}/0", retry_attempts=0),
    )
    async with serve(config) as client:
        cameras = await client.get("/api/cameras")
        assert cameras.status_code == 503
        assert "PostgreSQL is unavailable" in cameras.json()["error"]
        events = await client.get("/api/events")  # read on the pool's psycopg connection
        assert events.status_code == 503
        assert events.headers["retry-after"] == "5"
        assert events.json()["error"].startswith("PostgreSQL is unavailable (OperationalError)")
        streams = await client.get("/api/streams")
        assert streams.status_code == 503
        assert "Redis is unavailable" in streams.json()["error"]
        ready = await client.get("/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["redis"]["ok"] is False
        assert checks["postgres"]["ok"] is False

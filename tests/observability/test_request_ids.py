"""Request ids: echoed from a trusted proxy, made otherwise, in the response header, the log lines
and the span of the request, on errors too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hsi.api.request_ids import MAX_LENGTH, SPAN_ATTRIBUTE, accepted_id, is_trusted
from hsi.app.asgi import APIConfig, RateLimits, create_app
from hsi.logs.setup import LoggingConfig, get_logger, reset_logging, setup_logging
from tests.api.conftest import with_lifespan_state
from tests.conftest import MakeConfig

GIVEN = "proxy-4f1c2a"
KEY = "k" * 40


@pytest.mark.parametrize(
    ("peer", "trusted", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1",), True),
        ("10.0.0.7", ("127.0.0.1",), False),
        ("10.0.0.7", ("10.0.0.0/8",), True),
        ("10.0.0.7", (" 192.168.1.1", "10.0.0.0/24"), True),
        ("::1", ("::1",), True),
        ("2001:db8::5", ("2001:db8::/32",), True),
        ("10.0.0.7", ("*",), True),
        ("/run/hsi.sock", ("/run/hsi.sock",), True),
        ("10.0.0.7", ("not-an-address",), False),
        (None, ("*",), False),
    ],
)
def test_trusted_peers(peer: str | None, trusted: tuple[str, ...], expected: bool) -> None:
    """A peer is trusted when FORWARDED_ALLOW_IPS names it, its network, or `*`."""
    assert is_trusted(peer, trusted) is expected


@pytest.mark.parametrize(
    ("given", "trusted_peer", "expected"),
    [
        (GIVEN, True, GIVEN),
        (GIVEN, False, None),
        (None, True, None),
        ("", True, None),
        ("x" * MAX_LENGTH, True, "x" * MAX_LENGTH),
        ("x" * (MAX_LENGTH + 1), True, None),
        ("has space", True, None),
        ("tab\there", True, None),
        ("newline\nforged: line", True, None),
        ("caf\u00e9", True, None),
    ],
)
def test_accepted_ids(given: str | None, trusted_peer: bool, expected: str | None) -> None:
    """An incoming id is kept only from a trusted peer, printable and at most 128 characters."""
    assert accepted_id(given, trusted_peer) == expected


async def _boom(_: Request) -> Response:
    raise RuntimeError("the route failed")


async def _chatty(_: Request) -> Response:
    get_logger("hsi.test.api").info("test.first", step=1)
    logging.getLogger("other.lib").warning("plain %s line", "library")
    return JSONResponse({"ok": True})


@asynccontextmanager
async def serve(config: APIConfig, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus two test routes (one fails, one logs), reached from `peer`."""
    app = create_app(config)
    app.router.routes.extend([Route("/test/boom", _boom), Route("/test/chatty", _chatty)])
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(
            with_lifespan_state(app, dict(state or {})), client=(peer, 40000)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://hsi.test") as client:
            yield client


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    reset_logging()
    setup_logging(LoggingConfig(format="json"), stream=out)
    yield out
    reset_logging()


def _records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


async def test_trusted_proxy_id_is_echoed(engine: AsyncEngine, make_config: MakeConfig) -> None:
    """A trusted proxy's X-Request-ID comes back, even with X-Forwarded-For naming its client."""
    headers = {"X-Request-ID": GIVEN, "X-Forwarded-For": "203.0.113.9"}
    async with serve(make_config(forwarded_allow_ips=("10.0.0.0/8",)), peer="10.1.2.3") as client:
        response = await client.get("/health", headers=headers)
    assert response.headers["X-Request-ID"] == GIVEN


async def test_untrusted_peer_id_is_replaced(engine: AsyncEngine, make_config: MakeConfig) -> None:
    """An X-Request-ID from a peer that is no trusted proxy is replaced by a fresh id."""
    async with serve(make_config(), peer="198.51.100.4") as client:
        response = await client.get("/health", headers={"X-Request-ID": GIVEN})
    assert response.headers["X-Request-ID"] not in ("", GIVEN)
    assert len(response.headers["X-Request-ID"]) == 32


async def test_ids_are_made_when_absent(engine: AsyncEngine, make_config: MakeConfig) -> None:
    """Without the header every request gets its own id; an invalid one is replaced."""
    async with serve(make_config()) as client:
        first = await client.get("/health")
        second = await client.get("/api/cameras")
        invalid = await client.get("/health", headers={"X-Request-ID": "x" * 129})
    ids = [r.headers["X-Request-ID"] for r in (first, second, invalid)]
    assert len(set(ids)) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_every_log_line_of_a_request_has_its_id(
    engine: AsyncEngine, make_config: MakeConfig, json_log: io.StringIO
) -> None:
    """The JSON log lines written while serving a request carry its id, HSI's and a library's."""
    async with serve(make_config()) as client:
        response = await client.get("/test/chatty", headers={"X-Request-ID": GIVEN})
        other = await client.get("/test/chatty")
    assert response.status_code == 200
    ours = ("test.first", "plain library line")
    records = [r for r in _records(json_log) if r["message"] in ours]
    assert [r["request_id"] for r in records] == [
        GIVEN,
        GIVEN,
        *[other.headers["X-Request-ID"]] * 2,
    ]


async def test_span_has_the_request_id(
    engine: AsyncEngine, make_config: MakeConfig, spans: InMemorySpanExporter
) -> None:
    """The request's server span carries its id as `hsi.request_id`."""
    async with serve(make_config()) as client:
        response = await client.get("/api/cameras", headers={"X-Request-ID": GIVEN})
    assert response.status_code == 200
    (span,) = [s for s in spans.get_finished_spans() if s.name == "GET /api/cameras"]
    assert span.attributes is not None
    assert span.attributes[SPAN_ATTRIBUTE] == GIVEN


async def test_unhandled_error_is_a_json_500_with_the_id(
    engine: AsyncEngine,
    make_config: MakeConfig,
    spans: InMemorySpanExporter,
    json_log: io.StringIO,
) -> None:
    """A route that raises answers a JSON 500 with the id, logged and traced under that id."""
    async with serve(make_config()) as client:
        response = await client.get("/test/boom", headers={"X-Request-ID": GIVEN})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == GIVEN
    assert "request's id" in response.json()["error"]
    (failed,) = [r for r in _records(json_log) if r["message"] == "api.request_failed"]
    assert failed["request_id"] == GIVEN
    assert "the route failed" in str(failed.get("exception"))
    (span,) = [s for s in spans.get_finished_spans() if s.attributes and "url.path" in s.attributes]
    assert span.attributes is not None
    assert (span.attributes[SPAN_ATTRIBUTE], span.attributes["http.response.status_code"]) == (
        GIVEN,
        500,
    )


@pytest.mark.parametrize("path", ["/api/cameras", "/api/events/not-a-uuid", "/api/no/such"])
async def test_refusals_carry_the_id(
    engine: AsyncEngine, make_config: MakeConfig, path: str
) -> None:
    """401 (no key), 404 and 400 answers carry the request's id too."""
    config = make_config(api_key_enabled=True, api_keys=(SecretStr(KEY),))
    async with serve(config) as client:
        refused = await client.get(path, headers={"X-Request-ID": GIVEN})
        answered = await client.get(path, headers={"X-Request-ID": GIVEN, "X-API-Key": KEY})
    assert (refused.status_code, refused.headers["X-Request-ID"]) == (401, GIVEN)
    assert answered.headers["X-Request-ID"] == GIVEN
    assert answered.status_code in (200, 400, 404)


async def test_rate_limited_answer_carries_the_id(
    engine: AsyncEngine, make_config: MakeConfig
) -> None:
    """A 429 carries the request's id."""
    limits = RateLimits(enabled=True, requests_per_minute=1)
    async with serve(make_config(rate_limits=limits)) as client:
        first = await client.get("/api/cameras")
        limited = await client.get("/api/cameras", headers={"X-Request-ID": GIVEN})
    assert first.status_code == 200
    assert (limited.status_code, limited.headers["X-Request-ID"]) == (429, GIVEN)

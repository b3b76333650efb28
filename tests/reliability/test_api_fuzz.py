"""Property-based fuzzing of every route of the query API from its own OpenAPI description.

The app runs under a real uvicorn over a migrated schema filled by the real projector from
published camera histories (plus alert rows), with the media files on disk and the streams in
Redis, so generated requests reach real rows, files and streams. Schemathesis generates, per
operation, a fixed number of requests that fit the description (positive) and that do not
(negative), derandomized so every run sends the same requests.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from redis.asyncio import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.config import LiveConfig, RateLimits
from hsi.api.endpoint import CAMERA_ID_PATTERN
from hsi.api.params import LABEL_PATTERN, parse_labels
from hsi.api.responses import BadParameter
from hsi.infra.db import migrate
from hsi.infra.redis import RedisConfig
from streams.names import StreamNames, is_camera_id
from tests.api.conftest import serve
from tests.api.rows import (
    BASE,
    add_camera,
    detection_row,
    insert,
    insert_many,
    many_events,
    media_row,
)
from tests.api.server import running
from tests.conftest import PHOTOS, MakeConfig
from tests.projections.builders import CAMERA, publish_story
from tests.projections.support import project_all, stage_for

EXAMPLES = 25  # per operation and generation mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OUTAGE_EXAMPLES = 3
OUTAGE_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass(frozen=True)
class Seeded:
    """Identifiers that exist, so that generated requests also hit data."""

    cameras: tuple[str, ...]
    event_ids: tuple[str, ...]
    detection_ids: tuple[str, ...]
    media_paths: tuple[str, ...]
    run_ids: tuple[str, ...] = ()


@pytest.fixture(autouse=True)
def _hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis keeps a cache of source constants in its home folder (`.hypothesis` in the
    working directory by default): give it the test's temporary folder instead."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate(db_engine)
    return db_engine


async def _column(engine: AsyncEngine, sql: str) -> tuple[str, ...]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(sql)
        return tuple(str(row[0]) for row in rows)


@pytest.fixture
async def seeded(
    engine: AsyncEngine, redis_client: Redis, key_prefix: str, tmp_path: Path
) -> Seeded:
    """A projected camera history, events of two more cameras, alerts and files on disk."""
    names = StreamNames(key_prefix)
    story = await publish_story(redis_client, names, files=12)
    await redis_client.sadd(names.camera_set, CAMERA, "garage")  # type: ignore[misc]
    await project_all(redis_client, stage_for(redis_client, names, engine), story.streams)
    await add_camera(engine, "garage", "Garage")
    events = many_events(60, ("garage", CAMERA))
    await insert_many(engine, "events", events)
    await insert(
        engine,
        "alerts",
        [
            {
                "id": uuid.UUID(int=10_000 + i),
                "camera_id": CAMERA,
                "entry_id": f"{i + 1}-0",
                "event_id": events[i]["id"],
                "analysis_entry_id": f"{i + 1}-1",
                "rule": "risk",
                "channel": ("webhook", "email", "mqtt")[i % 3],
                "status": "sent" if i % 2 else "failed",
                "reason": None if i % 2 else "delivery_error",
                "attempt": 1,
                "error": None,
                "idempotency_key": f"k{i}",
                "delivered_at": BASE if i % 2 else None,
                "recorded_at": BASE - timedelta(minutes=i),
            }
            for i in range(12)
        ],
    )
    await insert(
        engine,
        "reanalysis_runs",
        [{"id": "20261120T120000-abcdef", "analyzer": "rules", "started_at": BASE, "cameras": 1}],
    )
    paths = await _column(engine, "SELECT path FROM media_files ORDER BY path")
    for path in paths:
        target = tmp_path / "cameras" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / "cat-chelsea.jpg", target)
    return Seeded(
        cameras=await _column(engine, "SELECT id FROM cameras ORDER BY id"),
        event_ids=await _column(engine, "SELECT id FROM events ORDER BY id LIMIT 20"),
        detection_ids=await _column(engine, "SELECT id FROM detections ORDER BY id"),
        media_paths=paths,
        run_ids=("20261120T120000-abcdef",),
    )


def _known(operation: Any, seeded: Seeded) -> st.SearchStrategy[schemathesis.Case] | None:
    """Cases whose identifiers (path and `camera_id` query) exist, the rest generated."""
    values = {
        "camera_id": seeded.cameras,
        "event_id": seeded.event_ids,
        "detection_id": seeded.detection_ids,
        "path": seeded.media_paths,
        "run_id": seeded.run_ids,
    }
    params = operation.definition.raw.get("parameters", [])
    in_path = [p["name"] for p in params if p["in"] == "path" and p["name"] in values]
    in_query = [p["name"] for p in params if p["in"] == "query" and p["name"] == "camera_id"]
    if not in_path and not in_query:
        return None
    if "path" in in_path:  # a media file of the camera that owns it
        picks = st.sampled_from(seeded.media_paths).map(
            lambda path: {"camera_id": CAMERA, "path": path}
        )
    else:
        picks = st.fixed_dictionaries(
            {name: st.sampled_from(values[name]) for name in in_path + in_query}
        )
    return picks.flatmap(
        lambda chosen: operation.as_strategy(
            path_parameters={k: v for k, v in chosen.items() if k in in_path} or None,
            query={k: v for k, v in chosen.items() if k in in_query} or None,
        )
    )


@dataclass
class Tally:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # operations that answered 2xx at least once
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)


def _fuzz_operation(
    operation: Any, mode: GenerationMode, seeded: Seeded, base_url: str, tally: Tally
) -> None:
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS
    strategy = operation.as_strategy(generation_mode=mode)
    known = _known(operation, seeded) if mode.is_positive else None
    if known is not None:
        strategy = st.one_of(strategy, known)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, timeout=5)
        tally.sent += 1
        tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
        if response.status_code < 300:
            tally.answered.add(operation.label)
        case.validate_response(response, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # a negative case needs something that can be invalid; a plain string path has nothing
        assert mode.is_negative, f"{operation.label}: no valid request could be generated"
        tally.unsatisfiable.append(operation.label)
    except (Exception, BaseExceptionGroup) as exc:
        tally.failures.append(f"{operation.label} [{mode.value}]: {exc}")


def _fuzz(schema: Any, base_url: str, seeded: Seeded) -> Tally:
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.definition.raw.get("parameters"):
            modes.append(GenerationMode.NEGATIVE)  # something to make invalid
        for mode in modes:
            _fuzz_operation(operation, mode, seeded, base_url, tally)
    return tally


async def test_every_operation_survives_generated_requests(
    seeded: Seeded, make_config: MakeConfig
) -> None:
    """Generated valid and invalid requests to every route: no 5xx, documented status codes,
    content types and error bodies."""
    config = make_config(
        rate_limits=RateLimits(enabled=False),
        live=LiveConfig(heartbeat_seconds=0.05, idle_timeout_seconds=0.2, block_seconds=0.05),
    )
    async with running(config) as client:
        raw = (await client.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(raw)
        tally = await asyncio.to_thread(_fuzz, schema, str(client.base_url).rstrip("/"), seeded)
    print(f"fuzz: {tally.sent} requests, statuses {sorted(tally.statuses.items())}")
    print(f"fuzz: no negative cases for {tally.unsatisfiable}")
    assert not tally.failures, "\n\n".join(tally.failures)
    assert tally.answered == {f"GET {path}" for path in raw["paths"]}  # every route hit data


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _outage(schema: Any, base_url: str) -> tuple[dict[int, int], list[str]]:
    statuses: dict[int, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=OUTAGE_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, timeout=5)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=OUTAGE_CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    return statuses, failures


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis-cluster"])
async def test_answers_during_an_outage_are_documented(
    make_config: MakeConfig, cluster: bool
) -> None:
    """With PostgreSQL and Redis (a server, or a cluster: its client raises other errors)
    unreachable every route still answers as described: the 503s (and /ready's not-ready
    numbers) are documented, JSON, with the documented bodies."""
    redis = RedisConfig(
        url=f"redis://127.0.0.1:{_closed_port()}/0", cluster=cluster, retry_attempts=0
    )
    config = make_config(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/hsi",
        redis=redis,
        live=LiveConfig(heartbeat_seconds=0.05, idle_timeout_seconds=0.2, block_seconds=0.05),
    )
    async with running(config) as client:
        raw = (await client.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(raw)
        statuses, failures = await asyncio.to_thread(
            _outage, schema, str(client.base_url).rstrip("/")
        )
    print(f"outage: statuses {sorted(statuses.items())}")
    assert not failures, "\n\n".join(failures)
    assert statuses[503] > 0
    assert not set(statuses) - {200, 400, 404, 503}


# --- what the fuzzing found, pinned -------------------------------------------------------------


@pytest.mark.parametrize("bound", ["5e-324", "1e-46", "1e-45", "1e-40"])
async def test_a_tiny_min_confidence_is_above_zero(
    engine: AsyncEngine, make_config: MakeConfig, bound: str
) -> None:
    """A positive bound below the smallest `real` was a PostgreSQL underflow (a 503 "PostgreSQL
    is unavailable"); it filters like any bound that small: every detection above zero."""
    file = media_row(CAMERA, "1-0", "Front Door/a.jpg", BASE)
    await insert(engine, "media_files", [file])
    rows = [
        detection_row(file, "d-1", i, "person", (1, 1, 2, 2), (10, 10), confidence)
        for i, confidence in enumerate((0.0, 0.3, 0.9))
    ]
    await insert(engine, "detections", rows)
    async with serve(make_config()) as client:
        tiny = await client.get("/api/detections", params={"min_confidence": bound})
    assert tiny.status_code == 200, tiny.text
    assert sorted(d["confidence"] for d in tiny.json()["items"]) == [0.3, 0.9]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("channel=", "channel"),
        ("channel=webhook,", "channel"),
        ("status=sent&status=", "status"),
    ],
)
async def test_an_empty_list_value_is_a_400(
    engine: AsyncEngine, make_config: MakeConfig, query: str, parameter: str
) -> None:
    """`?channel=` used to be dropped silently (an unfiltered answer to a filtered question)."""
    async with serve(make_config()) as client:
        response = await client.get(f"/api/alerts?{query}")
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter


@pytest.mark.parametrize(
    "value",
    ["front_door", "garage2", "0cam", "a" * 64, "a" * 65, "Front", "_cam", "cam-1", "", "ca m"],
)
def test_the_described_camera_id_is_the_one_the_api_accepts(value: str) -> None:
    """The camera-id pattern of the description matches exactly what the parser accepts, so
    generated valid requests are valid to the API too."""
    assert (re.search(CAMERA_ID_PATTERN, value) is not None) is is_camera_id(value)


@pytest.mark.parametrize("value", ["person", "traffic light", "a.b-c_d", "", "x" * 65, "per%son"])
def test_the_described_label_is_the_one_the_api_accepts(value: str) -> None:
    """Likewise for object types (`label`, `object_type`)."""
    accepted = True
    try:
        parse_labels("label", [value])
    except BadParameter:
        accepted = False
    assert (re.search(LABEL_PATTERN, value) is not None) is accepted

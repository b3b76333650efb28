"""Latency of GET /api/events over many events (a script, not a test).

    python -m tests.api.bench_events [--events 100000] [--requests 200]

Uses the servers named by HSI_TEST_DATABASE_URL / HSI_TEST_REDIS_URL, or starts the embedded
ones in a temporary folder. Events go into a schema of their own (one INSERT … SELECT over
generate_series), which is dropped at the end. Requests go through the whole app in process
(httpx ASGITransport: routing, middleware, SQL, JSON), so the numbers exclude only the network.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from hsi.api.app import APIConfig, RateLimits, create_app
from hsi.config import normalize_database_url
from hsi.db import create_engine, migrate
from hsi.embedded import EmbeddedPostgres, EmbeddedRedis
from hsi.redis import RedisConfig
from tests.api.conftest import with_lifespan_state

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

SCENARIOS: dict[str, dict[str, Any]] = {
    "first page (limit 50)": {},
    "first page (limit 100)": {"limit": 100},
    "camera_id": {"camera_id": "camera_3"},
    "risk_level=high,critical": {"risk_level": "high,critical"},
    "min_score=90": {"min_score": 90},
    "object_type=dog": {"object_type": "dog"},
    "since/until (1 day)": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
    "camera+level+type": {"camera_id": "camera_2", "risk_level": "high", "object_type": "person"},
    # camera_1 never sees a person: the planner walks the whole window index to find nothing
    "no match (worst case)": {"camera_id": "camera_1", "object_type": "person"},
}


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(client: httpx.AsyncClient, params: dict[str, Any], count: int) -> list[float]:
    """`count` requests: the first page, then following next_cursor deeper (restarting at the
    end), so deep pages are measured too."""
    samples = []
    cursor = None
    for _ in range(count):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        start = time.perf_counter()
        response = await client.get("/api/events", params=query)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
        cursor = response.json()["next_cursor"]
    return samples


async def _run(database_url: str, redis_url: str, events: int, requests: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(database_url, schema=schema)
    try:
        await migrate(engine)
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text(FILL), {"n": events})
            await conn.execute(text("ANALYZE events"))
        print(f"inserted {events} events in {time.perf_counter() - started:.1f} s")
        config = APIConfig(
            database_url=database_url,
            redis=RedisConfig(url=redis_url),
            database_schema=schema,
            rate_limits=RateLimits(enabled=False),
        )
        app = create_app(config)
        async with app.router.lifespan_context(app) as state:
            transport = httpx.ASGITransport(with_lifespan_state(app, dict(state or {})))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await _measure(client, {}, 20)  # warm up the pool and the caches
                print(f"{'scenario':28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
                for name, params in SCENARIOS.items():
                    samples = await _measure(client, params, requests)
                    print(
                        f"{name:28} {statistics.median(samples):8.2f} "
                        f"{_percentile(samples, 0.99):8.2f} {statistics.fmean(samples):8.2f}"
                    )
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    database_url = os.environ.get("HSI_TEST_DATABASE_URL")
    redis_url = os.environ.get("HSI_TEST_REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="hsi-bench-") as folder:
        postgres = redis = None
        if not database_url:
            postgres = EmbeddedPostgres(Path(folder))
            database_url = postgres.start()
        if not redis_url:
            redis = EmbeddedRedis(Path(folder))
            redis_url = redis.start()
        try:
            asyncio.run(
                _run(normalize_database_url(database_url), redis_url, args.events, args.requests)
            )
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None:
                postgres.stop()


if __name__ == "__main__":
    main()

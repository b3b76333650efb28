"""Projector throughput: `python -m tests.projections.bench_projector [entries] [batch]`.

Applies `entries` detection.completed entries (two objects each, so one media_files upsert and
two detections rows per entry) in batches of `batch`, one transaction per batch, into a fresh
schema, and prints entries/s. Uses HSI_TEST_DATABASE_URL, else an embedded PostgreSQL in a
temporary folder. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from hsi.config import normalize_database_url
from hsi.db import create_engine, migrate
from hsi.embedded import EmbeddedPostgres
from projections.projector import Projector
from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.reclaim import StreamEntry
from tests.projections.builders import at, detected, detection_completed, file_observed


def _entries(count: int) -> list[StreamEntry]:
    base = 1_700_000_000_000
    entries = []
    for n in range(count):
        file = file_observed(n, captured=at(n))
        objects = [detected("person", 0.9), detected("car", 0.6, x=50.0)]
        detection = detection_completed(file, f"{base + n}-0", objects)
        entries.append((f"{base + n}-1", entry_fields(detection)))
    return entries


async def _bench(url: str, count: int, batch: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, schema=schema)
    try:
        await migrate(engine)
        names = StreamNames("bench")
        projector = Projector(engine, names)
        stream = names.detections("front_door")
        entries = _entries(count)
        started = time.perf_counter()
        for start in range(0, count, batch):
            result = await projector.apply(stream, entries[start : start + batch])
            assert not result.failed, result.failed
        seconds = time.perf_counter() - started
        async with engine.connect() as conn:
            rows = await conn.scalar(text("SELECT count(*) FROM detections"))
        print(
            f"{count} detection entries ({rows} detection rows), batches of {batch}: "
            f"{seconds:.2f} s, {count / seconds:,.0f} entries/s"
        )
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    url = os.environ.get("HSI_TEST_DATABASE_URL")
    if url:
        asyncio.run(_bench(normalize_database_url(url), count, batch))
        return
    with tempfile.TemporaryDirectory(prefix="hsi-bench-") as folder:
        server = EmbeddedPostgres(Path(folder))
        try:
            asyncio.run(_bench(server.start(), count, batch))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

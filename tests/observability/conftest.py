"""Fixtures of the observability tests: telemetry with an in-memory span exporter, a migrated
schema and a camera root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import migrate
from hsi.infra.telemetry import TelemetryConfig, reset_telemetry, setup_telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """HSI's telemetry with every finished span kept in memory; reset afterwards."""
    reset_telemetry()
    exporter = InMemorySpanExporter()
    setup_telemetry(TelemetryConfig(service_name="hsi-test"), span_exporter=exporter)
    yield exporter
    reset_telemetry()


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    """The test's schema with every migration applied."""
    await migrate(db_engine)
    return db_engine


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "cameras"
    folder.mkdir()
    return folder

"""Small helpers shared by the benchmarks: waiting for a condition, alternating HSI and floor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg

from benchmarks.floor import done_counts


class BenchmarkError(RuntimeError):
    """A benchmark could not finish (a timeout, a wrong count); the message says where."""


async def wait_for_rows(
    conn: psycopg.AsyncConnection[Any],
    files: int,
    events: int,
    *,
    within_seconds: float,
    interval: float = 0.02,
    what: str = "HSI",
) -> float:
    """Poll until `files` media files are detected and `events` events analysed; returns the
    `time.perf_counter()` at which they were seen."""
    deadline = time.perf_counter() + within_seconds
    seen = (0, 0)
    while time.perf_counter() < deadline:
        seen = await done_counts(conn)
        if seen[0] >= files and seen[1] >= events:
            return time.perf_counter()
        await asyncio.sleep(interval)
    raise BenchmarkError(
        f"{what}: after {within_seconds:.0f} s only {seen[0]}/{files} files were detected and "
        f"{seen[1]}/{events} events analysed in PostgreSQL"
    )


def alternate(
    round_index: int,
    hsi: Callable[[], Coroutine[Any, Any, float]],
    floor: Callable[[], Coroutine[Any, Any, float]],
) -> tuple[float, float]:
    """Run HSI and its floor one after the other (HSI first on even rounds, floor first on odd
    ones, so neither always gets the warmer or the cooler machine); (hsi value, floor value)."""
    if round_index % 2 == 0:
        first = asyncio.run(hsi())
        second = asyncio.run(floor())
        return first, second
    second = asyncio.run(floor())
    first = asyncio.run(hsi())
    return first, second

"""A tiny run of every benchmark, so that none of them rots: they run and produce numbers.

No timing is asserted: numbers depend on the machine. The benchmarks use the session's servers.
"""

from __future__ import annotations

import math

import pytest

from benchmarks import __main__ as runner
from benchmarks import detection, latency, memory, query, replay, scaleout, throughput
from benchmarks.environment import DATABASE_ENV, REDIS_ENV, Servers
from benchmarks.options import Options, Size
from benchmarks.report import Figure
from streams.stages.runtime import CameraSelection

SMOKE = Options(size=Size.SMOKE, rounds=1)


@pytest.fixture
def servers(redis_url: str, database_url: str) -> Servers:
    return Servers(redis_url, database_url, embedded=())


def _numbers(figures: list[Figure]) -> None:
    assert figures
    for figure in figures:
        assert figure.hsi, figure.name
        assert all(math.isfinite(value) and value >= 0 for value in figure.hsi), figure
        if figure.floor is not None:
            assert figure.floor, figure.name
            assert all(math.isfinite(value) and value >= 0 for value in figure.floor), figure


def test_throughput_runs(servers: Servers) -> None:
    """B1 moves files through HSI's pipeline and through the raw floor."""
    _numbers(throughput.run(servers, SMOKE))


def test_scaleout_runs(servers: Servers, cluster_url: str) -> None:
    """B8 moves B1's files through 1 and 2 `hsi worker` processes, on one Redis and on the
    session's three-node cluster; each variant against one process on one Redis."""
    figures = scaleout.run(servers, SMOKE, cluster_url=cluster_url)
    _numbers(figures)
    assert [f.name.split(",")[1].strip() for f in figures] == [
        "2 worker processes",
        "1 worker process",
        "2 worker processes",
    ]


def test_scaleout_cameras_split_evenly_over_shards() -> None:
    """`--shard i/2` owns half of B8's cameras at every size."""
    for count in (2, 4, 8):
        cameras = scaleout.balanced_cameras(count)
        assert len(set(cameras)) == count
        for shard in ("0/2", "1/2"):
            owned = [c for c in cameras if CameraSelection.parse(None, shard).owns(c)]
            assert len(owned) == count // 2


@pytest.mark.slow
def test_latency_runs(servers: Servers) -> None:
    """B2 sees every file's event through the API and through the floor."""
    figures = latency.run(servers, SMOKE)
    _numbers(figures)
    assert "events never seen: HSI 0, floor 0" in figures[0].note


def test_replay_runs(servers: Servers) -> None:
    """B3 rebuilds the projections with HSI and with the floor."""
    _numbers(replay.run(servers, SMOKE))


def test_query_runs(servers: Servers) -> None:
    """B4 queries events through the API and through psycopg."""
    _numbers(query.run(servers, SMOKE))


@pytest.mark.slow
def test_memory_runs(servers: Servers) -> None:
    """B5 runs `hsi up` through its files and reads its memory."""
    _numbers(memory.run(servers, SMOKE))


def test_detection_runs(servers: Servers) -> None:
    """B6 detects the same generated pictures through HSI's pipeline and through onnxruntime."""
    figures = detection.run(servers, SMOKE)
    _numbers(figures)
    assert [f.floor is not None for f in figures] == [True, False, False]


def test_accuracy_runs_without_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """B7 runs the embedded detector over a tiny corpus; the runner starts no server for it."""

    def no_servers() -> None:
        raise AssertionError("the accuracy benchmark needs no servers")

    monkeypatch.setattr(runner, "servers", no_servers)
    figures = runner.run(["accuracy"], SMOKE)
    _numbers(figures)
    assert any(f.name.startswith("person recall") for f in figures)


def test_runner_prints_the_table(
    redis_url: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m benchmarks replay` prints the command and one table row per figure."""
    monkeypatch.setenv(REDIS_ENV, redis_url)
    monkeypatch.setenv(DATABASE_ENV, database_url)
    assert runner.main(["replay", "--smoke", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("$ python -m benchmarks replay --smoke --rounds 1")
    assert "| B3 | replay," in out

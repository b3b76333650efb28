"""Embedded PostgreSQL and Valkey: start, reuse, stop, and recovery after crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from hsi.infra.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServers
from hsi.infra.embedded.valkey import redis_ping as _redis_ping

pytestmark = pytest.mark.slow


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running")


def _pg_query(url: str) -> int:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def test_start_reuse_stop(server_dir: Path) -> None:
    """A start runs both servers; a second start reuses them; stop ends them."""
    servers = EmbeddedServers(server_dir)
    try:
        redis_url = servers.start_redis()
        pg_url = servers.start_postgres()
        first = {s.name: s.pid for s in servers.status()}
        assert all(s.running for s in servers.status())
        assert _pg_query(pg_url) == 1
        assert servers.start_redis() == redis_url
        assert servers.start_postgres() == pg_url
        assert {s.name: s.pid for s in servers.status()} == first
    finally:
        stopped = servers.stop()
    assert sorted(stopped) == ["postgres", "redis"]
    assert not any(s.running for s in servers.status())
    assert servers.stop() == []


def test_servers_outlive_a_killed_owner(server_dir: Path) -> None:
    """A process that started the servers and was SIGKILLed leaves them usable and reused."""
    script = (
        "import sys, time; from pathlib import Path\n"
        "from hsi.infra.embedded import EmbeddedServers\n"
        "s = EmbeddedServers(Path(sys.argv[1])); s.start_redis(); s.start_postgres()\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(server_dir)], stdout=subprocess.PIPE, text=True
    )
    servers = EmbeddedServers(server_dir)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        before = {s.name: s.pid for s in servers.status()}
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        pg_url = servers.start_postgres()
        servers.start_redis()
        assert {s.name: s.pid for s in servers.status()} == before
        assert _pg_query(pg_url) == 1
    finally:
        owner.kill()
        owner.wait(10)
        assert owner.stdout is not None
        owner.stdout.close()
        servers.stop()


def test_killed_servers_are_restarted_on_their_port(server_dir: Path) -> None:
    """After SIGKILL of the servers themselves, the next start brings them back on the same port."""
    redis = EmbeddedRedis(server_dir)
    postgres = EmbeddedPostgres(server_dir)
    try:
        redis_url = redis.start()
        pg_url = postgres.start()
        for status in (redis.status(), postgres.status()):
            assert status.pid is not None
            os.kill(status.pid, signal.SIGKILL)
            _wait_gone(status.pid)
        assert not redis.status().running
        assert not postgres.status().running
        assert redis.start() == redis_url
        assert postgres.start() == pg_url
        assert _pg_query(pg_url) == 1
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        assert _redis_ping(port, redis.password())
    finally:
        redis.stop()
        postgres.stop()


def test_hung_redis_is_replaced(server_dir: Path) -> None:
    """A server that no longer answers (SIGSTOP) is killed and replaced, never left on its port."""
    redis = EmbeddedRedis(server_dir)
    try:
        url = redis.start()
        stale = redis.status().pid
        assert stale is not None
        os.kill(stale, signal.SIGSTOP)
        assert redis.start() == url
        fresh = redis.status()
        assert fresh.running
        assert fresh.pid != stale
        _wait_gone(stale)
    finally:
        redis.stop()

"""The `hsi` command line against real servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from hsi.cli import main
from hsi.settings.model import Settings, get_settings


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test reads settings afresh from a clean environment in its own folder."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hsi config show` prints every setting as JSON with secrets masked."""
    monkeypatch.setenv("LLM_API_KEY", "sk-top-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://hsi:pw-secret@db/hsi")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["llm_api_key"] == "***"
    assert shown["database_url"] == "postgresql+psycopg://hsi:***@db/hsi"
    assert "sk-top-secret" not in result.output
    assert "pw-secret" not in result.output


def test_bad_setting_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value ends the command with the settings message, not a traceback."""
    monkeypatch.setenv("API_PORT", "eighty")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 1
    assert "API_PORT='eighty'" in result.output
    assert "Traceback" not in result.output


def test_doctor_on_a_fresh_checkout(monkeypatch: pytest.MonkeyPatch, server_dir: Path) -> None:
    """With nothing started, doctor says the embedded servers are down and how to start them."""
    monkeypatch.setenv("DATA_DIR", str(server_dir))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "[fail] redis: embedded Redis is not running" in result.output
    assert "[fail] postgres: embedded PostgreSQL is not running" in result.output
    assert "hsi services start" in result.output
    assert "[  ok] detector: embedded CPU detector" in result.output
    assert "[  ok] analyzer: rule-based scorer" in result.output
    assert "[warn] cameras: camera root" in result.output


def test_doctor_with_servers(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, database_url: str, db_schema: str
) -> None:
    """Against running servers, doctor reports versions and pending migrations."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", f"{database_url}?options=-csearch_path%3D{db_schema}")
    monkeypatch.setenv("DETECTOR_BACKEND", "rtdetr")
    monkeypatch.setenv("RTDETR_URL", f"http://127.0.0.1:{_free_port()}")
    result = CliRunner().invoke(main, ["doctor"])
    assert "[  ok] redis:" in result.output or "[warn] redis:" in result.output
    assert "postgres: PostgreSQL" in result.output
    assert "migration(s) pending" in result.output
    assert "[fail] detector: RT-DETR at" in result.output
    assert "DETECTOR_BACKEND=embedded" in result.output
    assert result.exit_code == 1


def test_services_lifecycle(monkeypatch: pytest.MonkeyPatch, server_dir: Path) -> None:
    """`hsi services start|status|stop` manage the embedded servers; migrate applies once."""
    monkeypatch.setenv("DATA_DIR", str(server_dir))
    runner = CliRunner()
    try:
        started = runner.invoke(main, ["services", "start"])
        assert started.exit_code == 0, started.output
        assert "redis     redis://:***@127.0.0.1:" in started.output
        assert "postgres  postgresql+psycopg://postgres:***@127.0.0.1:" in started.output
        urls = runner.invoke(main, ["services", "url"])
        assert urls.exit_code == 0, urls.output
        password = (server_dir / "redis" / "password").read_text().strip()
        assert f"redis     redis://:{password}@127.0.0.1:" in urls.output
        postgres_url = runner.invoke(main, ["services", "url", "postgres"]).output.strip()
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        status = runner.invoke(main, ["services", "status"])
        assert status.output.count("running") == 2
        assert password not in status.output
        first = runner.invoke(main, ["migrate"])
        assert first.exit_code == 0, first.output
        assert "applied: 0001_logs.sql, 0002_projections.sql" in first.output
        assert "migrations are current" in runner.invoke(main, ["migrate"]).output
        doctor = runner.invoke(main, ["doctor"])
        assert "[  ok] redis: valkey" in doctor.output
        assert "migrations current" in doctor.output
    finally:
        stopped = runner.invoke(main, ["services", "stop"])
    assert "redis" in stopped.output
    assert "postgres" in stopped.output
    assert runner.invoke(main, ["services", "status"]).output.count("stopped") == 2


def test_certs_generate_and_show(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`hsi certs generate` writes a certificate that `hsi certs show` describes."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TLS_HOSTNAMES", "hsi.home.arpa")
    runner = CliRunner()
    generated = runner.invoke(main, ["certs", "generate"])
    assert generated.exit_code == 0, generated.output
    assert (tmp_path / "data" / "certs" / "hsi.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(main, ["certs", "generate"])
    assert again.exit_code == 1
    assert "--force" in again.output
    shown = runner.invoke(main, ["certs", "show"])
    assert shown.exit_code == 0, shown.output
    assert "hsi.home.arpa" in shown.output


def _wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hsi up exited with {proc.returncode}")
        try:
            return httpx.get(url, timeout=2, verify=False)  # noqa: S501 - self-signed, test only
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_up_serves_health_and_metrics(
    tls: bool, redis_url: str, database_url: str, db_schema: str, tmp_path: Path
) -> None:
    """`hsi up` applies migrations and serves /health, /ready and /metrics (HTTPS with TLS on)."""
    port = _free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k.upper() not in {n.upper() for n in Settings.model_fields}
        },
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"{database_url}?options=-csearch_path%3D{db_schema}",
        "DATA_DIR": str(tmp_path / "data"),
        "API_PORT": str(port),
        "TLS_MODE": "self_signed" if tls else "disabled",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hsi.cli", "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    scheme = "https" if tls else "http"
    try:
        health = _wait_http(f"{scheme}://127.0.0.1:{port}/health", proc)
        assert health.json()["status"] == "ok"
        ready = httpx.get(f"{scheme}://127.0.0.1:{port}/ready", verify=False)  # noqa: S501
        assert ready.status_code == 200, ready.text
        metrics = httpx.get(f"{scheme}://127.0.0.1:{port}/metrics", verify=False)  # noqa: S501
        assert metrics.status_code == 200
        families = list(text_string_to_metric_families(metrics.text))
        assert families
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "Application shutdown complete" in output
    assert "pipeline.stopped" in output  # the graceful path ran, not a signal's default
    assert "api.listening" in output
    assert "color_message" not in output


def test_ingest_backfills_and_reports_duplicates(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """`hsi ingest` publishes existing files once; a second run reports them as duplicates."""
    import asyncio
    import shutil

    from streams.names import StreamNames
    from tests.conftest import PHOTOS

    root = tmp_path / "cameras"
    (root / "Garage").mkdir(parents=True)
    shutil.copy(PHOTOS / "cat-chelsea.jpg", root / "Garage" / "MDAlarm_20260101-120000.jpg")
    shutil.copy(PHOTOS / "empty-coffee.jpg", root / "Garage" / "MDAlarm_20260101-120005.jpg")
    (root / "Garage" / "notes.txt").write_text("not media")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAM_PREFIX", key_prefix)
    monkeypatch.setenv("FOSCAM_BASE_PATH", str(root))
    monkeypatch.setenv("WATCH_STABLE_SECONDS", "0.1")
    runner = CliRunner()
    first = runner.invoke(main, ["ingest", str(root)])
    assert first.exit_code == 0, first.output
    assert "2 observed" in first.output
    assert "ignored" in first.output
    second = runner.invoke(main, ["ingest", str(root / "Garage")])
    assert "2 duplicate" in second.output, second.output

    async def stream_length() -> int:
        from redis.asyncio import Redis

        client = Redis.from_url(redis_url)
        try:
            return int(await client.xlen(StreamNames(key_prefix).files("garage")))
        finally:
            await client.aclose()

    assert asyncio.run(stream_length()) == 2


def test_bench_runs_the_checkouts_benchmarks() -> None:
    """`hsi bench` runs `python -m benchmarks` of the checkout it is started in, as a process."""
    result = subprocess.run(
        [sys.executable, "-m", "hsi.cli", "bench", "--help"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_bench_outside_a_checkout_says_where_to_run_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Outside a source checkout `hsi bench` says where to run it instead of a traceback."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["bench", "--quick"])
    assert result.exit_code == 1
    assert "source checkout" in result.output


def test_zones_check_lists_the_zones_or_names_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    zones = tmp_path / "zones.toml"
    zones.write_text(
        '[[cameras.front_door.zones]]\nname = "street"\nkind = "ignore"\n'
        "points = [[0, 0.8], [1, 0.8], [1, 1], [0, 1]]\n"
    )
    monkeypatch.setenv("ZONES_PATH", str(zones))
    result = CliRunner().invoke(main, ["zones", "check"])
    assert result.exit_code == 0, result.output
    assert "- front_door:" in result.output
    assert "street (ignore): (0, 0.8) (1, 0.8) (1, 1) (0, 1)" in result.output

    zones.write_text(
        '[[cameras.front_door.zones]]\nname = "gate"\npoints = [[0, 0], [1, 1], [1, 0], [0, 1]]\n'
    )
    result = CliRunner().invoke(main, ["zones", "check"])
    assert result.exit_code == 1
    assert "camera 'front_door', zones[0] (zone 'gate'): field 'points'" in result.output
    assert "crosses the edge" in result.output


@pytest.mark.parametrize(
    ("rules", "env", "message"),
    [
        ("[media]\nlow = 7\n", {}, "RETENTION_DELETE_MEDIA=true"),
        ("[media]\nlow = 'a week'\n", {"RETENTION_DELETE_MEDIA": "true"}, "media.low must be"),
        ("[media\n", {}, "is not valid TOML"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_retention_refuses_bad_rules(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    rules: str,
    env: dict[str, str],
    message: str,
    command: str,
) -> None:
    """`hsi retention plan|run` stop on a bad RETENTION_RULES_PATH, saying what to fix."""
    path = tmp_path / "retention.toml"
    path.write_text(rules, encoding="utf-8")
    monkeypatch.setenv("RETENTION_RULES_PATH", str(path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["retention", command])
    assert result.exit_code == 1, result.output
    assert message in result.output

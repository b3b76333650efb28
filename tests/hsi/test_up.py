"""`hsi up` end to end: images dropped into a camera folder become analyses on the streams."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from hsi.settings.model import Settings
from streams.envelope import read_fields
from streams.names import StreamNames
from streams.schemas import AnalysisCompleted
from tests.conftest import PHOTOS
from tests.fakes.llm import serve_fake_llm
from tests.fakes.rtdetr import serve_fake_rtdetr
from tests.fakes.server import free_port

pytestmark = pytest.mark.slow


def _env(**values: str) -> dict[str, str]:
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(values)
    return env


@pytest.fixture
def hsi_up(
    redis_url: str, database_url: str, db_schema: str, key_prefix: str, tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """A function-scoped `hsi up` launcher: yields the camera root and the base environment."""
    root = tmp_path / "cameras"
    root.mkdir()
    env = _env(
        REDIS_URL=redis_url,
        DATABASE_URL=f"{database_url}?options=-csearch_path%3D{db_schema}",
        DATA_DIR=str(tmp_path / "data"),
        FOSCAM_BASE_PATH=str(root),
        STREAM_PREFIX=key_prefix,
        API_PORT=str(free_port()),
        BATCH_IDLE_TIMEOUT_SECONDS="1",
        BATCH_WINDOW_SECONDS="5",
        WATCH_STABLE_SECONDS="0.2",
        DETECTION_CONFIDENCE_THRESHOLD="0.35",
        TIMEZONE="UTC",
    )
    return root, env


def _start(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hsi.cli", "up"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    return output


async def _analyses(
    redis: Redis,
    names: StreamNames,
    camera: str,
    count: int,
    proc: subprocess.Popen[str],
    seconds: float = 60,
) -> list[AnalysisCompleted]:
    async with asyncio.timeout(seconds):
        while True:
            assert proc.poll() is None, "hsi up exited early"
            rows = await redis.xrange(names.analyses(camera))
            found = [read_fields(f)[0] for _, f in rows]
            if len(found) >= count:
                return [a for a in found if isinstance(a, AnalysisCompleted)]
            await asyncio.sleep(0.1)


async def _until_ready(client: httpx.AsyncClient, proc: subprocess.Popen[str]) -> None:
    """Wait until `hsi up` answers /ready with 200."""
    async with asyncio.timeout(60):
        while True:
            assert proc.poll() is None, "hsi up exited early"
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


async def test_dropped_images_become_analyses(
    hsi_up: tuple[Path, dict[str, str]], redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    """With no AI service configured, images in `Front Door/` yield analyses for `front_door`."""
    root, env = hsi_up
    proc = _start(env, tmp_path)
    try:
        folder = root / "Front Door"
        folder.mkdir()
        for photo in ("person-astronaut.jpg", "person-cameraman.jpg"):
            shutil.copy(PHOTOS / photo, folder / f"MDAlarm_20261128-1200{photo[7:9]}.jpg")
        analyses = await _analyses(redis_client, StreamNames(key_prefix), "front_door", 1, proc)
    finally:
        output = _stop(proc)
    assert analyses, output
    assert analyses[0].analyzer == "rules"
    assert "person" in analyses[0].summary.lower(), analyses[0].summary


async def test_with_rtdetr_and_llm_services(
    hsi_up: tuple[Path, dict[str, str]], redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    """With the RT-DETR and LLM services configured, HSI uses them for every stage."""
    root, env = hsi_up
    reply = {
        "risk_score": 91,
        "risk_level": "critical",
        "summary": "Intruder at the door",
        "reasoning": "A person at night.",
    }
    with serve_fake_rtdetr() as (detector, detector_url), serve_fake_llm() as (llm, llm_url):
        llm.answer_with("<think>hmm</think>" + orjson.dumps(reply).decode())
        env = {
            **env,
            "DETECTOR_BACKEND": "rtdetr",
            "RTDETR_URL": detector_url,
            "ANALYZER_BACKEND": "llm",
            "LLM_URL": llm_url,
            "LLM_MODEL": "nemotron-test",
        }
        proc = _start(env, tmp_path)
        try:
            folder = root / "Front Door"
            folder.mkdir()
            shutil.copy(PHOTOS / "cat-chelsea.jpg", folder / "snap.jpg")
            analyses = await _analyses(redis_client, StreamNames(key_prefix), "front_door", 1, proc)
        finally:
            output = _stop(proc)
        assert detector.requests >= 1
        assert llm.requests >= 1
    assert analyses, output
    assert analyses[0].risk_score == 91
    assert analyses[0].risk_level == "critical"
    assert analyses[0].analyzer == "llm"
    assert analyses[0].summary == "Intruder at the door"


async def test_dropped_image_is_an_event_in_the_api_and_live_feed(
    hsi_up: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """An image dropped into a camera folder shows in /api/events and on /api/live;
    afterwards `hsi replay --verify` finds the projection equal to a rebuild."""
    root, env = hsi_up
    base = f"http://127.0.0.1:{env['API_PORT']}"
    proc = _start(env, tmp_path)
    live_lines: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await _until_ready(client, proc)
            async with client.stream("GET", "/api/live") as live:
                folder = root / "Back Yard"
                folder.mkdir()
                shutil.copy(PHOTOS / "person-cameraman.jpg", folder / "MDAlarm_20261128-230000.jpg")
                async with asyncio.timeout(60):
                    async for line in live.aiter_lines():
                        live_lines.append(line)
                        if line.startswith("event: analysis"):
                            break
            async with asyncio.timeout(30):
                while True:
                    events = (
                        await client.get("/api/events", params={"camera_id": "back_yard"})
                    ).json()
                    if events["items"] and events["items"][0]["analysis_status"] == "completed":
                        break
                    await asyncio.sleep(0.2)
    finally:
        output = _stop(proc)
    event = events["items"][0]
    assert event["camera_id"] == "back_yard", output
    assert "person" in event["object_types"]
    assert any(line.startswith("event: batch") for line in live_lines)
    verified = subprocess.run(
        [sys.executable, "-m", "hsi.cli", "replay", "--verify"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "projection equals a rebuild" in verified.stdout


async def test_a_real_ftp_upload_becomes_an_event(
    hsi_up: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A camera uploading by FTP to `hsi up`'s built-in receiver produces an event in the API."""
    import ftplib

    root, env = hsi_up
    ftp_port = free_port()
    env = {
        **env,
        "FTP_ENABLED": "true",
        "FTP_HOST": "127.0.0.1",
        "FTP_PORT": str(ftp_port),
        "FTP_PASSIVE_PORTS": "",
        "FTP_ACCOUNTS": "frontdoor:s3cret-camera-pw:Front Door",
    }
    base = f"http://127.0.0.1:{env['API_PORT']}"
    proc = _start(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await _until_ready(client, proc)

            def upload() -> None:
                with ftplib.FTP() as ftp:  # noqa: S321 - cameras speak plain FTP
                    ftp.connect("127.0.0.1", ftp_port, timeout=10)
                    ftp.login("frontdoor", "s3cret-camera-pw")
                    with (PHOTOS / "person-astronaut.jpg").open("rb") as photo:
                        ftp.storbinary("STOR MDAlarm_20261128-221500.jpg", photo)

            await asyncio.to_thread(upload)
            async with asyncio.timeout(60):
                while True:
                    events = (
                        await client.get("/api/events", params={"camera_id": "front_door"})
                    ).json()
                    if events["items"] and events["items"][0]["analysis_status"] == "completed":
                        break
                    await asyncio.sleep(0.2)
    finally:
        output = _stop(proc)
    assert (root / "Front Door" / "MDAlarm_20261128-221500.jpg").is_file()
    assert "person" in events["items"][0]["object_types"], output
    assert "s3cret-camera-pw" not in output


async def test_an_api_beyond_loopback_generates_its_key(
    hsi_up: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """`hsi up` on 0.0.0.0 without API_KEYS prints a generated key once, keeps it readable by its
    owner only, and serves no picture, event, metric or readiness detail without it."""
    _, env = hsi_up
    env = {**env, "API_HOST": "0.0.0.0"}
    base = f"http://127.0.0.1:{env['API_PORT']}"
    proc = _start(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await _until_ready(client, proc)
            key_file = Path(env["DATA_DIR"]) / "api-key"
            key = key_file.read_text().strip()
            assert key_file.stat().st_mode & 0o777 == 0o600
            for path in ("/api/events", "/api/cameras", "/metrics", "/openapi.json"):
                assert (await client.get(path)).status_code == 401, path
                assert (await client.get(path, headers={"X-API-Key": key})).status_code == 200
            assert set((await client.get("/ready")).json()) == {"status"}
            shown = subprocess.run(
                [sys.executable, "-m", "hsi.cli", "api-key"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert shown.stdout.strip() == key
    finally:
        output = _stop(proc)
    assert output.count(key) == 1, output  # printed once, never in a log line
    assert "hsi api-key" in output

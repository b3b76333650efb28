"""`hsi demo`: the scripted scene through the whole system, its sandbox and its terminal view."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.demo import DemoError
from hsi.demo.sandbox import choose_port, demo_prefix, pin_schema, sandbox
from hsi.demo.scene import (
    CAMERAS,
    SCENE,
    WIDE,
    WIDE_SIZE,
    photo_bytes,
    pieces,
    upload,
    upload_name,
)
from hsi.demo.view import DemoView, Snapshot
from hsi.infra.embedded import EmbeddedServers
from hsi.settings.model import CLASS_THRESHOLDS, Settings, TLSMode
from streams.detectors import EmbeddedDetector
from streams.names import camera_id
from tests.conftest import PHOTOS

DEMO_CAMERAS = {camera_id(c) for c in CAMERAS}


# --- the sandbox --------------------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("speed", "window", "idle"), [(1.0, 20.0, 4.0), (4.0, 5.0, 1.0), (20.0, 1.0, 1.0)]
)
def test_sandbox_keeps_the_demo_apart(speed: float, window: float, idle: float) -> None:
    """The demo gets its own data folder, camera root, key prefix and loopback-only API, and
    batch timeouts short enough to watch (divided by the speed, idle at least 1 s)."""
    settings = _settings(
        data_dir=Path("/srv/hsi"),
        foscam_base_path=Path("/srv/ftp"),
        stream_prefix="home",
        api_host="0.0.0.0",
        tls_mode="self_signed",
        api_key_enabled=True,
        api_keys="k1-0123456789abcdefghijklmnopqrstuv",
        ftp_enabled=True,
        ftp_accounts="cam:pw:Front Door",
    )
    demo = sandbox(settings, speed).settings
    assert demo.data_dir == Path("/srv/hsi/demo")
    assert demo.camera_root == Path("/srv/hsi/demo/cameras")
    assert demo.stream_prefix == "homedemo"
    assert demo.api_host == "127.0.0.1"
    assert demo.tls_mode is TLSMode.DISABLED
    assert not demo.api_key_enabled
    assert not demo.ftp_enabled
    assert (demo.batch_window_seconds, demo.batch_idle_timeout_seconds) == (window, idle)
    assert demo.database_url is None
    assert demo.redis_url is None


def test_demo_prefix_stays_a_valid_prefix() -> None:
    """The demo's key prefix is the configured one plus `demo`, cut to 32 characters."""
    assert demo_prefix("hsi") == "hsidemo"
    long = demo_prefix("x" * 32)
    assert len(long) == 32
    assert long.endswith("demo")
    _settings(stream_prefix=long)  # passes STREAM_PREFIX's validation


@pytest.mark.parametrize(
    ("url", "pinned", "schema"),
    [
        (
            "postgresql+psycopg://hsi:pw@db:5432/hsi",
            "postgresql+psycopg://hsi:pw@db:5432/hsi?options=-csearch_path%3Dhsidemo",
            "hsidemo",
        ),
        (
            "postgresql+psycopg://hsi:pw@db/hsi?options=-cstatement_timeout%3D5000",
            "postgresql+psycopg://hsi:pw@db/hsi"
            "?options=-cstatement_timeout%3D5000+-csearch_path%3Dhsidemo",
            "hsidemo",
        ),
        (
            "postgresql+psycopg://hsi:pw@db/hsi?options=-csearch_path%3Dmine",
            "postgresql+psycopg://hsi:pw@db/hsi?options=-csearch_path%3Dmine",
            None,
        ),
    ],
    ids=["plain", "other-options", "already-pinned"],
)
def test_configured_database_gets_a_schema_of_its_own(
    url: str, pinned: str, schema: str | None
) -> None:
    """On a configured DATABASE_URL the demo's tables go to schema `hsidemo`, unless the URL
    already pins a search_path; the password survives."""
    assert pin_schema(url, "hsidemo") == (pinned, schema)
    box = sandbox(_settings(database_url=url))
    assert box.schema == schema


def test_port_choice() -> None:
    """A taken default port moves the demo to a free one (with a note); a taken port that was
    asked for (`--port` or API_PORT) is an error that says what to do."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        port, note = choose_port(None, taken, api_port_set=False)
        assert port != taken
        assert note == f"port {taken} is in use (by `hsi up`?): the demo's API uses port {port}"
        with pytest.raises(DemoError, match=f"port {taken} is in use.*--port"):
            choose_port(taken, 8000, api_port_set=False)
        with pytest.raises(DemoError, match="--port"):
            choose_port(None, taken, api_port_set=True)
    assert choose_port(None, taken, api_port_set=True) == (taken, None)  # free again


# --- the scene ----------------------------------------------------------------------------------


def test_scene_uses_four_cameras_and_shipped_photos() -> None:
    """The scene has the four demo cameras; its photos ship with the package and are the test
    photographs, or the gate's 1080p views made from them; no camera gets the same photo twice
    (it would be a duplicate)."""
    assert CAMERAS == ("Back Yard", "Driveway", "Front Door", "Gate")
    for shot in SCENE:
        data = photo_bytes(shot.photo)
        if shot.photo in WIDE:
            with Image.open(io.BytesIO(data)) as wide:
                assert (wide.format, wide.size) == ("JPEG", WIDE_SIZE)
        else:
            assert data == (PHOTOS / shot.photo).read_bytes()
    pairs = [(s.camera, photo_bytes(s.photo)) for s in SCENE]
    assert len(pairs) == len(set(pairs))


async def test_the_gate_visitor_is_found_only_by_looking_closer() -> None:
    """The gate's visitor (150 px tall in 1080p) is missed by one full-frame pass and found, in
    both pictures of the burst, by the motion mode HSI runs by default."""
    views = [Image.open(io.BytesIO(photo_bytes(name))).convert("RGB") for name in WIDE]
    full = EmbeddedDetector(mode="full", class_thresholds=CLASS_THRESHOLDS)
    motion = EmbeddedDetector(mode="motion", class_thresholds=CLASS_THRESHOLDS)
    try:
        assert not any(o.label == "person" for v in views for o in full.detect_picture(v).objects)
        found = [motion.detect_picture(now, before) for before, now in itertools.pairwise(views)]
    finally:
        await full.aclose()
        await motion.aclose()
    for result, place in zip(found, list(WIDE.values())[1:], strict=True):
        assert place is not None
        (person,) = [o for o in result.objects if o.label == "person"]
        assert abs(person.bbox.x - place[0]) < 10
        assert abs(person.bbox.y - place[1]) < 10
        assert person.confidence >= CLASS_THRESHOLDS["person"]


def test_upload_names_are_foscam_names_and_unique() -> None:
    """Names follow Foscam's alarm snapshots and never reuse one in a folder (nor its .part)."""
    from datetime import datetime

    at = datetime(2026, 11, 28, 12, 0, 5)
    assert upload_name(at, set()) == "MDAlarm_20261128-120005.jpg"
    assert upload_name(at, {"MDAlarm_20261128-120005.jpg"}) == "MDAlarm_20261128-120005-1.jpg"
    taken = {"MDAlarm_20261128-120005.jpg.part", "MDAlarm_20261128-120005-1.jpg"}
    assert upload_name(at, taken) == "MDAlarm_20261128-120005-2.jpg"


@pytest.mark.parametrize(("size", "count", "parts"), [(10, 3, 3), (10, 1, 1), (2, 6, 2), (0, 3, 1)])
def test_pieces(size: int, count: int, parts: int) -> None:
    """An upload is cut into at most `count` parts that add up to the whole."""
    data = bytes(range(size))
    cut = pieces(data, count)
    assert len(cut) == parts
    assert b"".join(cut) == data


@pytest.mark.parametrize("via_temporary_name", [False, True])
async def test_upload_writes_like_a_camera(tmp_path: Path, via_temporary_name: bool) -> None:
    """An upload ends as the whole file under its name, with no `.part` left behind."""
    data = photo_bytes("cat-chelsea.jpg")
    target = tmp_path / "Back Yard" / "MDAlarm_20261128-120000.jpg"
    await upload(data, target, parts=4, pause=0.01, via_temporary_name=via_temporary_name)
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


# --- the view -----------------------------------------------------------------------------------


def _streams(cameras: dict[str, tuple[int, int]], lag: int = 0) -> dict[str, Any]:
    """/api/streams for cameras → (detections length, not yet projected)."""
    body = [
        {
            "camera_id": camera,
            "streams": [
                {
                    "kind": "detections",
                    "length": length,
                    "groups": [{"name": "project", "lag": behind, "pending": 0}],
                }
            ],
        }
        for camera, (length, behind) in cameras.items()
    ]
    return {"cameras": body, "totals": {"lag": lag, "pending": 0}}


def _event(camera: str, count: int, status: str = "completed") -> dict[str, Any]:
    return {
        "id": f"{camera}-{count}-{status}",
        "camera_id": camera,
        "window_start": "2026-11-28T12:00:00+00:00",
        "detection_count": count,
        "object_types": ["person"],
        "analysis_status": status,
        "risk_score": 40,
        "risk_level": "medium",
        "summary": f"person at {camera}",
    }


def test_view_settles_when_every_object_is_in_an_analyzed_event() -> None:
    """The demo is done only when every upload is detected and projected, every detected object
    belongs to an event and no event awaits its analysis."""
    view = DemoView(rows=[r for r in DemoView().rows if r.shot.camera == "Front Door"])
    for i, row in enumerate(view.rows):
        row.file, row.status = f"f{i}.jpg", "uploaded"
    person = {"camera_id": "front_door", "label": "person", "confidence": 0.8}
    detections = [{**person, "path": f"Front Door/f{i}.jpg"} for i in (0, 1)]

    behind = Snapshot(_streams({"front_door": (3, 1)}, lag=1), detections, [])
    lines = view.apply(behind)
    assert [r.status for r in view.rows] == ["found", "found", "uploaded"]
    assert all(line.startswith("detect  Front Door") for line in lines)
    assert not view.settled(behind)

    open_batch = Snapshot(_streams({"front_door": (3, 0)}), detections, [])
    view.apply(open_batch)
    assert view.rows[2].status == "nothing"
    assert not view.settled(open_batch)  # two objects, no event yet

    pending = Snapshot(open_batch.streams, detections, [_event("front_door", 2, "pending")])
    assert view.apply(pending) == []
    assert not view.settled(pending)

    done = Snapshot(open_batch.streams, detections, [_event("front_door", 2)])
    lines = view.apply(done)
    assert view.settled(done)
    assert len(lines) == 1
    assert lines[0].startswith("event   Front Door  person (2)")
    assert "risk 40 medium" in lines[0]


# --- the demo as a process ----------------------------------------------------------------------


def _env(**values: str) -> dict[str, str]:
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(values, PYTHONUNBUFFERED="1", COLUMNS="160")
    return env


@pytest.fixture
def demo_env(
    redis_url: str,
    redis_client: Redis,  # removes the demo's keys afterwards (their prefix starts with ours)
    database_url: str,
    db_schema: str,
    key_prefix: str,
    tmp_path: Path,
) -> dict[str, str]:
    """The demo on the test servers: its keys under our prefix, its tables in our schema."""
    return _env(
        REDIS_URL=redis_url,
        DATABASE_URL=f"{database_url}?options=-csearch_path%3D{db_schema}",
        STREAM_PREFIX=key_prefix,
        DATA_DIR=str(tmp_path / "data"),
        API_PORT=str(_free_port()),
        TIMEZONE="UTC",
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "hsi.cli", "demo", *args]


def _event_cameras(output: str) -> set[str]:
    """Camera folders named on the `event` lines of the demo's output."""
    return {
        camera
        for line in output.splitlines()
        if line.startswith("event ")
        for camera in CAMERAS
        if camera in line
    }


@pytest.mark.slow
async def test_demo_plays_the_scene_and_runs_again(
    demo_env: dict[str, str], db_engine: AsyncEngine, tmp_path: Path
) -> None:
    """`hsi demo --no-wait` shows events of the four cameras and exits 0; a second run starts
    afresh: its tables hold exactly the events it printed, not the first run's as well. (How
    many events a camera's burst makes may differ between runs: a batch closes after 1 s without
    detections at speed 4, and a busy machine can delay a detection that long.)"""
    for _ in range(2):
        done = await asyncio.to_thread(
            subprocess.run,
            _demo("--no-wait", "--speed", "4"),
            cwd=tmp_path,
            env=demo_env,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert _event_cameras(output) == set(CAMERAS), output
        assert "Done in" in output
        assert "HSI demo stopped cleanly." in output
        async with db_engine.connect() as conn:
            rows = (await conn.execute(text("SELECT camera_id FROM events"))).all()
        assert {r.camera_id for r in rows} == DEMO_CAMERAS
        assert len(rows) == sum(1 for line in output.splitlines() if line.startswith("event "))


def _wait_for_output(path: Path, marker: str, proc: subprocess.Popen[str], within: float) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        output = path.read_text()
        if marker in output:
            return output
        assert proc.poll() is None, f"the demo exited early:\n{output}"
        time.sleep(0.2)
    raise AssertionError(f"no {marker!r} within {within} s:\n{path.read_text()}")


@pytest.mark.slow
def test_demo_serves_its_events_until_sigint(demo_env: dict[str, str], tmp_path: Path) -> None:
    """After the scene the API keeps serving the demo's events; SIGINT stops everything
    cleanly."""
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            _demo("--speed", "4"), cwd=tmp_path, env=demo_env, stdout=sink, stderr=sink, text=True
        )
    try:
        output = _wait_for_output(out, "Press Ctrl-C to stop.", proc, within=90)
        base = f"http://127.0.0.1:{demo_env['API_PORT']}"
        assert f"The API keeps running at {base}" in output
        events = httpx.get(f"{base}/api/events", params={"limit": 100}, timeout=10).json()
        assert {e["camera_id"] for e in events["items"]} == DEMO_CAMERAS
        assert all(e["analysis_status"] == "completed" for e in events["items"])
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out.read_text()
    assert proc.returncode in (0, -signal.SIGINT), output
    assert "HSI demo stopped cleanly." in output
    assert "Traceback" not in output
    log = (tmp_path / "data" / "demo" / "demo.log").read_text()
    assert "pipeline.stopped" in log  # the stages finished their batches in hand


@pytest.mark.slow
def test_demo_interrupted_during_the_scene(demo_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM while the cameras upload stops HSI cleanly too, with exit code 130."""
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            _demo("--no-wait"), cwd=tmp_path, env=demo_env, stdout=sink, stderr=sink, text=True
        )
    try:
        _wait_for_output(out, "upload  Driveway", proc, within=90)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out.read_text()
    assert proc.returncode == 130, output
    assert "interrupted: HSI stopped cleanly" in output
    assert "Traceback" not in output
    assert "pipeline.stopped" in (tmp_path / "data" / "demo" / "demo.log").read_text()


@pytest.mark.slow
def test_demo_with_nothing_configured(server_dir: Path, tmp_path: Path) -> None:
    """With no server configured the demo starts embedded Redis and PostgreSQL of its own under
    DATA_DIR/demo, plays the scene, and stops them again."""
    env = _env(DATA_DIR=str(server_dir), API_PORT=str(_free_port()), TIMEZONE="UTC")
    done = subprocess.run(
        _demo("--no-wait", "--speed", "4"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert _event_cameras(output) == set(CAMERAS), output
    assert "stopped the demo's embedded Redis and PostgreSQL" in output
    assert not any(s.running for s in EmbeddedServers(server_dir / "demo").status())

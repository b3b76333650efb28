"""Evidence export: `hsi export`, `hsi export verify` and GET /api/events/{id}/export, on data
the real projector made from real stream entries, with real files on disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.api.export.archive import CHUNK, archive_chunks, write_zip
from hsi.api.export.manifest import manifest_line, parse_manifest
from hsi.api.export.plan import (
    ExportConfig,
    ExportPlan,
    ExportTooLarge,
    Original,
    build_plan,
    check_size,
)
from hsi.api.export.verify import database_digests, database_problems, verify_zip
from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.schemas import AlertSent, FileObserved
from tests.api.conftest import serve
from tests.conftest import PHOTOS, MakeConfig
from tests.projections.builders import (
    T0,
    analysis_completed,
    batch_closed,
    camera_registered,
    detected,
    detection_completed,
    publish,
)
from tests.projections.support import project_all, stage_for

BERLIN = ZoneInfo("Europe/Berlin")
HSI = Path(sys.executable).with_name("hsi")
KEY = "export-key-0123456789"


@dataclass(frozen=True)
class Projected:
    events: list[uuid.UUID]  # oldest first
    paths: dict[str, Path]  # path relative to the root → the file on disk
    file_entries: list[str]
    batch_entries: list[str]
    analysis_entries: list[str]
    alert_entries: list[str]


def _observed(name: str, photo: str, root: Path, seconds: int) -> FileObserved:
    relative = f"Front Door/snap/{name}"
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PHOTOS / photo, target)
    data = target.read_bytes()
    captured = T0 + timedelta(seconds=seconds)
    return FileObserved(
        camera_id="front_door",
        path=relative,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mime="image/jpeg",
        media_kind="image",
        captured_at=captured,
        capture_source="filename",
        observed_at=captured + timedelta(seconds=1),
    )


@pytest.fixture
async def projected(
    engine: AsyncEngine, redis_client: Redis, names: StreamNames, camera_root: Path
) -> Projected:
    """Two events of front_door projected from real entries: the first of two pictures, with
    an alert sent; the second of one picture."""
    camera = "front_door"
    files = [
        _observed("MDAlarm_0001.jpg", "person-astronaut.jpg", camera_root, 0),
        _observed("MDAlarm_0002 cat.jpg", "cat-chelsea.jpg", camera_root, 5),
        _observed("MDAlarm_0003.jpg", "person-cameraman.jpg", camera_root, 600),
    ]
    await publish(redis_client, names.cameras, [camera_registered(camera)])
    file_ids = await publish(redis_client, names.files(camera), files)
    found = [
        detection_completed(f, i, [detected("person", 0.93), detected("car", 0.61, x=200.0)])
        for f, i in zip(files, file_ids, strict=True)
    ]
    detection_ids = await publish(redis_client, names.detections(camera), found)
    pairs = list(zip(detection_ids, found, strict=True))
    batches = [
        batch_closed(str(uuid.uuid4()), pairs[:2], camera),
        batch_closed(str(uuid.uuid4()), pairs[2:], camera),
    ]
    batch_ids = await publish(redis_client, names.batches(camera), batches)
    analyses = [
        analysis_completed(batches[0], batch_ids[0], 82, camera),
        analysis_completed(batches[1], batch_ids[1], 30, camera),
    ]
    analysis_ids = await publish(redis_client, names.analyses(camera), analyses)
    sent = AlertSent(
        camera_id=camera,
        event_id=batches[0].batch_id,
        analysis_entry_id=analysis_ids[0],
        rule="high_risk",
        channel="webhook",
        attempt=1,
        idempotency_key=f"{camera}:{batches[0].batch_id}:webhook",
        delivered_at=analyses[0].analyzed_at + timedelta(seconds=1),
    )
    alert_ids = await publish(redis_client, names.alerts(camera), [entry_fields(sent)])
    streams = [
        names.cameras,
        *(kind(camera) for kind in (names.files, names.detections, names.batches, names.analyses)),
        names.alerts(camera),
    ]
    await project_all(redis_client, stage_for(redis_client, names, engine), streams)
    return Projected(
        events=[uuid.UUID(b.batch_id) for b in batches],
        paths={f.path: camera_root / f.path for f in files},
        file_entries=file_ids,
        batch_entries=batch_ids,
        analysis_entries=analysis_ids,
        alert_entries=alert_ids,
    )


def _env(database_url: str, db_schema: str, redis_url: str, prefix: str, root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSI_", "DATABASE", "REDIS"))}
    env.update(
        DATABASE_URL=f"{database_url}?options=-csearch_path%3D{db_schema}",
        REDIS_URL=redis_url,
        STREAM_PREFIX=prefix,
        FOSCAM_BASE_PATH=str(root),
        DATA_DIR=str(root.parent / "data"),
        TIMEZONE="Europe/Berlin",
    )
    return env


async def _run(*args: str | Path, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *map(str, args),
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


def _config(root: Path, **overrides: object) -> ExportConfig:
    values: dict[str, object] = {"camera_root": root, "zone": BERLIN}
    values.update(overrides)
    return ExportConfig(**values)  # type: ignore[arg-type]


async def _export(
    engine: AsyncEngine, names: StreamNames, ids: list[uuid.UUID], config: ExportConfig, out: Path
) -> ExportPlan:
    async with engine.connect() as conn:
        plan = await build_plan(conn, ids, config, names, T0 + timedelta(days=3))
    check_size(plan, config.max_bytes)
    await asyncio.to_thread(write_zip, plan, config, out)
    return plan


def _sha256sum_check(archive: Path, into: Path) -> subprocess.CompletedProcess[str]:
    """Unpack with `unzip` and run the real `sha256sum -c SHA256SUMS` in the folder."""
    subprocess.run(["unzip", "-q", str(archive), "-d", str(into)], check=True)
    return subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=into,
        capture_output=True,
        text=True,
        check=False,
    )


# --- the manifest (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("files/a/x.jpg", "{d}  files/a/x.jpg\n"),
        ("files/a/Front Door/x y.jpg", "{d}  files/a/Front Door/x y.jpg\n"),
        ("files/a/back\\slash.jpg", "\\{d}  files/a/back\\\\slash.jpg\n"),
        ("files/a/new\nline.jpg", "\\{d}  files/a/new\\nline.jpg\n"),
    ],
)
def test_manifest_lines_are_what_sha256sum_writes(name: str, line: str) -> None:
    """`<hex>  <name>`; a name with a backslash or a line break is escaped as GNU sha256sum
    escapes it, and reads back to the same name."""
    digest = "ab" * 32
    assert manifest_line(name, digest) == line.format(d=digest)
    assert parse_manifest(manifest_line(name, digest)) == {name: digest}


def test_sha256sum_checks_an_escaped_line(tmp_path: Path) -> None:
    """The real sha256sum accepts the escaped line of a name holding a backslash."""
    (tmp_path / "a\\b.jpg").write_bytes(b"jpeg")
    digest = hashlib.sha256(b"jpeg").hexdigest()
    (tmp_path / "SHA256SUMS").write_text(manifest_line("a\\b.jpg", digest))
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_export_over_the_limit_is_refused_before_it_starts(tmp_path: Path) -> None:
    """The originals' sizes are added up front; over the limit is an error naming the setting."""
    plan = ExportPlan((), T0)
    check_size(plan, 1)
    big = Original("files/a/x.jpg", tmp_path / "x.jpg", 3 * 1024 * 1024, 0.0)
    event = type("E", (), {"originals": (big, big)})()  # the same file twice counts once
    plan = ExportPlan((event,), T0)  # type: ignore[arg-type]
    check_size(plan, 3 * 1024 * 1024)
    with pytest.raises(ExportTooLarge, match="EXPORT_MAX_MB"):
        check_size(plan, 3 * 1024 * 1024 - 1)


# --- exports of projected events ----------------------------------------------------------------


async def test_hsi_export_writes_a_zip_that_sha256sum_and_verify_accept(
    projected: Projected,
    camera_root: Path,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    redis_url: str,
    key_prefix: str,
) -> None:
    """`hsi export --camera front_door --out x.zip`: unzip and `sha256sum -c` pass, the originals
    are byte for byte, event.json holds the recorded digests and every stream entry id, the
    summary gives local and UTC times, the camera's name, detections, analysis and alert; and
    `hsi export verify` passes."""
    env = _env(database_url, db_schema, redis_url, key_prefix, camera_root)
    out = tmp_path / "x.zip"
    code, text = await _run(HSI, "export", "--camera", "front_door", "--out", out, env=env)
    assert code == 0, text
    assert "2 events, 3 original files" in text
    tested = subprocess.run(["unzip", "-t", str(out)], capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout
    checked = _sha256sum_check(out, tmp_path / "unpacked")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unpacked = tmp_path / "unpacked"
    assert checked.stdout.count(": OK") == len(
        parse_manifest((unpacked / "SHA256SUMS").read_text())
    )
    for relative, source in projected.paths.items():
        assert (unpacked / "files" / "front_door" / relative).read_bytes() == source.read_bytes()

    first, second = projected.events
    record = json.loads((unpacked / "events" / str(first) / "event.json").read_text())
    assert record["camera"] == {"id": "front_door", "name": "Front Door", "folder": "Front Door"}
    entries = record["stream_entries"]
    assert entries["files"] == projected.file_entries[:2]
    assert entries["batch"] == projected.batch_entries[0]
    assert entries["analysis"] == projected.analysis_entries[0]
    assert entries["alerts"] == projected.alert_entries
    assert entries["streams"]["files"] == StreamNames(key_prefix).files("front_door")
    assert len(entries["detections"]) == 2
    for f in record["files"]:
        assert f["state"] == "present"
        digest = hashlib.sha256(projected.paths[f["path"]].read_bytes()).hexdigest()
        assert f["recorded_sha256"] == f["archive_sha256"] == digest
        assert f["matches_recorded"] is True
        with Image.open(unpacked / f["picture"]) as picture:
            assert picture.format == "JPEG"
    assert record["local_times"]["window_start"].endswith("+01:00")
    assert record["alert_deliveries"][0]["entry_id"] == projected.alert_entries[0]
    summary = (unpacked / "events" / str(first) / "summary.txt").read_text()
    assert "Camera: Front Door (id front_door)" in summary
    assert "2026-01-01 13:00:00 CET (UTC+01:00) = 2026-01-01 12:00:00 UTC" in summary
    assert "2 x person" in summary
    assert "2 x car" in summary
    assert "Risk: high (score 82 of 100)" in summary
    assert "webhook: sent" in summary
    assert projected.alert_entries[0] in summary
    assert "the same as recorded when it arrived" in summary
    assert (unpacked / "events" / str(second) / "summary.txt").is_file()

    code, text = await _run(HSI, "export", "verify", out, env=env)
    assert code == 0, text
    assert "OK: " in text
    assert "(event.json and the database)" in text

    member = "files/front_door/Front Door/snap/MDAlarm_0001.jpg"
    added = tmp_path / "added.zip"
    _rezip(out, added, {member: b"not the picture"}, {})
    code, text = await _run(HSI, "export", "verify", added, env=env)
    assert code == 1
    assert f"FAILED: {member}: SHA-256" in text

    projected.paths["Front Door/snap/MDAlarm_0003.jpg"].write_bytes(os.urandom(1024 * 1024))
    big = tmp_path / "big.zip"
    code, text = await _run(
        HSI, "export", "--camera", "front_door", "--out", big, env={**env, "EXPORT_MAX_MB": "1"}
    )
    assert code == 1
    assert "more than the limit of 1 MB (EXPORT_MAX_MB)" in text
    assert not big.exists()


def _rezip(source: Path, target: Path, change: dict[str, bytes], add: dict[str, bytes]) -> None:
    """A copy of the zip with some members' contents replaced and some added (CRCs valid)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, change.get(info.filename, old.read(info)))
        for name, data in add.items():
            new.writestr(name, data)


async def test_a_tampered_export_fails_verify_naming_the_file(
    projected: Projected,
    engine: AsyncEngine,
    names: StreamNames,
    camera_root: Path,
    tmp_path: Path,
) -> None:
    """A byte changed in an original, a file added, or a corrupted zip fails verify with the
    file named; an original changed together with SHA256SUMS and event.json passes offline but
    not against the digests PostgreSQL recorded."""
    out = tmp_path / "x.zip"
    await _export(engine, names, projected.events, _config(camera_root), out)
    assert verify_zip(out).ok
    member = "files/front_door/Front Door/snap/MDAlarm_0001.jpg"
    original = projected.paths["Front Door/snap/MDAlarm_0001.jpg"].read_bytes()
    changed = bytes([original[0] ^ 1]) + original[1:]

    tampered = tmp_path / "tampered.zip"
    _rezip(out, tampered, {member: changed}, {})
    problems = verify_zip(tampered).problems
    assert any(p.startswith(f"{member}: SHA-256") and "SHA256SUMS" in p for p in problems)
    assert any(p.startswith(member) and "recorded when the file arrived" in p for p in problems)

    added = tmp_path / "added.zip"
    _rezip(out, added, {}, {"files/front_door/extra.jpg": b"planted"})
    assert verify_zip(added).problems == [
        "files/front_door/extra.jpg: in the archive but not listed in SHA256SUMS"
    ]

    flipped = bytearray(out.read_bytes())
    flipped[flipped.index(original[2000:2064]) + 10] ^= 0xFF  # inside the stored original
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(bytes(flipped))
    assert any(p.startswith(f"{member}: cannot be read") for p in verify_zip(corrupt).problems)

    # a forger who also rewrites SHA256SUMS and event.json: only the database tells
    with zipfile.ZipFile(out) as archive:
        sums = archive.read("SHA256SUMS").decode()
        record_name = f"events/{projected.events[0]}/event.json"
        record = archive.read(record_name).decode()
    old, new = (hashlib.sha256(b).hexdigest() for b in (original, changed))
    record = record.replace(old, new)
    sums = sums.replace(old, new)
    record_digest = hashlib.sha256(record.encode()).hexdigest()
    sums = "".join(
        manifest_line(name, record_digest if name == record_name else digest)
        for name, digest in parse_manifest(sums).items()
    )
    forged = tmp_path / "forged.zip"
    _rezip(
        out,
        forged,
        {member: changed, record_name: record.encode(), "SHA256SUMS": sums.encode()},
        {},
    )
    offline = verify_zip(forged)
    assert offline.ok, offline.problems
    async with engine.connect() as conn:
        recorded = await database_digests(conn, offline.originals)
    problems, _notes = database_problems(offline.originals, recorded)
    assert problems == [
        f"{member}: SHA-256 {new} differs from {old}, recorded in the database for file entry "
        f"{projected.file_entries[0]}"
    ]


async def test_files_gone_by_retention_are_reported_and_the_export_still_verifies(
    projected: Projected,
    engine: AsyncEngine,
    names: StreamNames,
    camera_root: Path,
    tmp_path: Path,
) -> None:
    """A file deleted from disk (as retention with RETENTION_DELETE_MEDIA does) and a file whose
    record retention deleted: the export works, its summary says so, and it verifies."""
    projected.paths["Front Door/snap/MDAlarm_0003.jpg"].unlink()
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "DELETE FROM media_files WHERE entry_id = %s", (projected.file_entries[1],)
        )
    out = tmp_path / "x.zip"
    plan = await _export(engine, names, projected.events, _config(camera_root), out)
    assert list(plan.originals()) == ["files/front_door/Front Door/snap/MDAlarm_0001.jpg"]
    checked = _sha256sum_check(out, tmp_path / "unpacked")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = verify_zip(out)
    assert result.ok, result.problems
    first, second = projected.events
    unpacked = tmp_path / "unpacked" / "events"
    summary = (unpacked / str(second) / "summary.txt").read_text()
    assert "file Front Door/snap/MDAlarm_0003.jpg is no longer on disk" in summary
    record = json.loads((unpacked / str(second) / "event.json").read_text())
    assert record["files"][0]["state"] == "missing"
    assert record["files"][0]["recorded_sha256"] is not None  # still known, and shown
    summary = (unpacked / str(first) / "summary.txt").read_text()
    assert f"file entry {projected.file_entries[1]}: its record was deleted by retention" in summary


async def test_the_api_streams_the_zip_under_the_key(
    projected: Projected, make_config: MakeConfig, camera_root: Path, tmp_path: Path
) -> None:
    """GET /api/events/{id}/export needs the key and answers a zip as an attachment, streamed,
    that verifies; an unknown event is 404 and one over EXPORT_MAX_MB a 413."""
    config = make_config(
        api_key_enabled=True, api_keys=(SecretStr(KEY),), timezone=BERLIN, camera_root=camera_root
    )
    event = projected.events[0]
    async with serve(config) as client:
        assert (await client.get(f"/api/events/{event}/export")).status_code == 401
        headers = {"X-API-Key": KEY}
        async with client.stream("GET", f"/api/events/{event}/export", headers=headers) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "application/zip"
            assert answer.headers["content-disposition"] == (
                f'attachment; filename="hsi-event-{event}.zip"'
            )
            assert "content-length" not in answer.headers  # written while it is sent
            body = b"".join([chunk async for chunk in answer.aiter_bytes()])
        missing = await client.get(f"/api/events/{uuid.uuid4()}/export", headers=headers)
        assert missing.status_code == 404
    out = tmp_path / "api.zip"
    out.write_bytes(body)
    result = verify_zip(out)
    assert result.ok, result.problems
    assert len(result.originals) == 2
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
    projected.paths["Front Door/snap/MDAlarm_0001.jpg"].write_bytes(os.urandom(1024 * 1024 + 1))
    async with serve(make_config(export_max_mb=1, camera_root=camera_root)) as client:
        refused = await client.get(f"/api/events/{event}/export")
    assert refused.status_code == 413
    assert "EXPORT_MAX_MB" in refused.json()["error"]


async def test_a_large_file_is_written_in_bounded_chunks(tmp_path: Path) -> None:
    """A file larger than the read buffer leaves the writer in pieces of about one buffer:
    nothing is held whole in memory; the zip reads back byte for byte."""
    data = os.urandom(5 * CHUNK + 123)
    source = tmp_path / "big.mp4"
    source.write_bytes(data)
    original = Original("files/cam/big.mp4", source, len(data), source.stat().st_mtime)
    event = type(
        "E",
        (),
        {
            "event_id": "e1",
            "originals": (original,),
            "pictures": (),
            "record": {
                "id": "e1",
                "camera_id": "cam",
                "camera": {"id": "cam", "name": None, "folder": None},
                "timezone": "UTC",
                "detections": [],
                "alert_deliveries": [],
                "stream_entries": {"batch": None, "analysis": None, "alerts": []},
                "files": [
                    {
                        "position": 0,
                        "path": "big.mp4",
                        "file_entry_id": "1-0",
                        "detection_entry_id": None,
                        "archive_path": original.member,
                        "state": "present",
                        "picture": None,
                        "recorded_sha256": hashlib.sha256(data).hexdigest(),
                        "captured_at": None,
                    }
                ],
            },
        },
    )()
    plan = ExportPlan((event,), T0)  # type: ignore[arg-type]
    sizes = []
    out = io.BytesIO()
    for chunk in archive_chunks(plan, _config(tmp_path)):
        sizes.append(len(chunk))
        out.write(chunk)
    assert max(sizes) <= CHUNK + 64 * 1024
    with zipfile.ZipFile(out) as archive:
        assert archive.read(original.member) == data

"""Hostile files in a camera folder: each one ends in a defined state with a clear log line.

A real watcher over a real camera root and the real Redis; where a file reaches detection, the
real detect stage with the embedded (ONNX) detector. Every test ends by dropping an ordinary
photo into the root and waiting for it to be published: the watcher is still alive.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from PIL import Image
from redis.asyncio import Redis

from hsi.logs.setup import PlainFormatter
from streams.contract import StreamEntry
from streams.detectors import EmbeddedDetector
from streams.envelope import read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import DetectionCompleted, DetectionFailed, FileObserved
from streams.stages.detect import DetectStage
from streams.watch import WatchConfig, Watcher
from tests.fakes.media import jpeg_bomb, photo, png_bomb, write_video

# watchdog 7 (inotify) may schedule a new sub-folder's watch twice and warns while reusing it.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

FAST = WatchConfig(
    stable_seconds=0.2,
    incomplete_timeout_seconds=1.0,
    poll_interval=0.1,
    debounce_seconds=0.02,
    min_image_bytes=100,
    min_video_bytes=100,
)
CAT = photo("cat-chelsea.jpg")
ASTRONAUT = photo("person-astronaut.jpg")
ROCKET = photo("empty-rocket.jpg")
COFFEE = photo("empty-coffee.jpg")
CAMERAMAN = photo("person-cameraman.jpg")
TIMEOUT = 15.0
GIB = 1024**3
MIB = 1024**2
# Bytes that lift a bomb above the minimum file sizes (HSI's default 1 KiB): smaller ones end
# `too_small` before any decoding.
PADDING = 2048


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "cameras"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the camera root, on the same file system (hard links work)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="hsi.watch")
    caplog.set_level(logging.DEBUG, logger="hsi.detect")
    return caplog


@pytest.fixture
async def watcher(redis_client: Redis, names: StreamNames, root: Path) -> AsyncIterator[Watcher]:
    async with Watcher(redis_client, names, root, FAST) as running:
        yield running


# --- helpers ---------------------------------------------------------------------------------
def put(root: Path, relative: str, source: Path | bytes) -> Path:
    """Copy a photo (or write bytes) to `root/relative`, making folders on the way."""
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(source, target)
    return target


def sha256(data: Path | bytes) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else data.read_bytes()).hexdigest()


def as_png(source: Path) -> bytes:
    buffer = io.BytesIO()
    with Image.open(source) as opened:
        opened.save(buffer, format="PNG")
    return buffer.getvalue()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition` holds, failing after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")
        await asyncio.sleep(0.005)


def handled(watcher: Watcher) -> int:
    """Files that reached an end state so far."""
    counts = watcher.counts
    return sum(
        (
            counts.observed,
            counts.duplicates,
            counts.corrupt,
            counts.ignored,
            counts.vanished,
            counts.failed,
        )
    )


async def settled(watcher: Watcher) -> None:
    await wait_for(lambda: watcher.pending == 0 and not watcher.scanning, "the watcher to settle")


async def files(client: Redis, names: StreamNames, camera: str) -> list[tuple[str, FileObserved]]:
    """The `file.observed` entries of a camera: id and entry."""
    rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(names.files(camera)))
    found = []
    for entry_id, fields in rows:
        entry, _ = read_fields(fields)
        assert isinstance(entry, FileObserved)
        found.append((entry_id.decode(), entry))
    return found


async def published(client: Redis, names: StreamNames) -> list[FileObserved]:
    """Every `file.observed` entry of every registered camera."""
    members = cast("set[bytes]", await client.smembers(names.camera_set))
    cameras = sorted(c.decode() for c in members)
    return [entry for camera in cameras for _, entry in await files(client, names, camera)]


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


def field(record: logging.LogRecord, name: str) -> Any:
    return record.__dict__[name]


def refusals(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The reasons of the warnings `file.ignored`, by file (or folder) name."""
    return {
        Path(str(field(r, "path"))).name: field(r, "reason")
        for r in records(caplog, "file.ignored")
        if r.levelno == logging.WARNING
    }


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def write_raw(path: bytes, source: Path) -> None:
    """Write a photo to a path given as raw bytes (a name that need not be UTF-8)."""
    with open(path, "wb") as handle:
        handle.write(source.read_bytes())


def by_path(caplog: pytest.LogCaptureFixture, event: str) -> dict[str, logging.LogRecord]:
    """The records of `event` by the file's path relative to the camera root."""
    return {field(r, "path"): r for r in records(caplog, event)}


async def still_alive(watcher: Watcher, client: Redis, names: StreamNames, root: Path) -> None:
    """An ordinary photo dropped in after everything else is published exactly once."""
    before = watcher.counts.observed
    put(root, "Alive/MDAlarm_20260101-120000.jpg", CAMERAMAN)
    await wait_for(lambda: watcher.counts.observed == before + 1, "the ordinary photo")
    await settled(watcher)
    ((_, entry),) = await files(client, names, "alive")
    assert (entry.path, entry.sha256) == ("Alive/MDAlarm_20260101-120000.jpg", sha256(CAMERAMAN))
    assert watcher.counts.failed == 0


@dataclass
class Peak:
    growth_bytes: int = 0


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None, f"{key} missing from /proc/self/status"
    return int(match.group(1))


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """How far this process's peak resident memory rose above its start inside the block.

    The kernel's high-water mark is reset first (`clear_refs` 5); where that is not allowed the
    growth is measured against the old high-water mark, which can only under-report.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        start = _status_kib("VmRSS")
    except OSError:
        start = _status_kib("VmHWM")
    peak = Peak()
    yield peak
    peak.growth_bytes = max(0, _status_kib("VmHWM") - start) * 1024


# --- broken images ---------------------------------------------------------------------------
async def test_empty_and_half_written_files_end_corrupt_and_are_never_published(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A zero-byte file, half a PNG and a text file named .mp4 end corrupt, once, with a reason."""
    put(root, "Porch/empty.jpg", b"")
    png = as_png(ROCKET)
    put(root, "Porch/half.png", png[: len(png) // 2])
    put(root, "Porch/notes.mp4", b"just some text, not a video\n" * 100)

    await wait_for(lambda: handled(watcher) == 3, "the three files")
    await still_alive(watcher, redis_client, names, root)

    corrupt = by_path(logs, "file.corrupt")
    assert sorted(corrupt) == ["Porch/empty.jpg", "Porch/half.png", "Porch/notes.mp4"]
    assert field(corrupt["Porch/empty.jpg"], "reason") == "too_small"
    assert field(corrupt["Porch/empty.jpg"], "size") == 0
    assert field(corrupt["Porch/half.png"], "reason") == "undecodable"
    assert "truncated" in field(corrupt["Porch/half.png"], "error")
    assert field(corrupt["Porch/notes.mp4"], "reason") == "undecodable"
    assert "not an MP4/MOV, Matroska or AVI" in field(corrupt["Porch/notes.mp4"], "error")
    assert all(r.levelno == logging.WARNING for r in corrupt.values())
    assert await files(redis_client, names, "porch") == []
    assert watcher.counts.corrupt == 3


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Decompression bombs by name. The two `filled` ones really inflate to all their pixels:
    decoding them would take 229 and 286 MiB of memory."""
    folder = tmp_path_factory.mktemp("bombs")
    made = {
        "huge.png": png_bomb(folder / "a.png", 50_000, 50_000, padding=PADDING),
        "over-limit.png": png_bomb(folder / "b.png", 8_000, 8_000, filled=True),  # HSI's limit
        "pillow-warns.png": png_bomb(folder / "c.png", 10_000, 10_000, filled=True),
        "huge.jpg": jpeg_bomb(folder / "d.jpg", 50_000, 50_000, padding=PADDING),
    }
    return {name: path.read_bytes() for name, path in made.items()}


@pytest.mark.parametrize(
    "bomb_warning", ["error", "always"], ids=["warnings-as-errors", "production"]
)
async def test_decompression_bombs_are_refused_before_a_pixel_is_decoded(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    logs: pytest.LogCaptureFixture,
    bombs: dict[str, bytes],
    bomb_warning: Literal["error", "always"],
) -> None:
    """Small PNGs/JPEGs declaring huge sizes end corrupt without memory growth, whether Pillow's
    bomb warning (above 89 Mpx) is an error (this suite) or only printed (production)."""
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter(bomb_warning, Image.DecompressionBombWarning)
        with peak_memory() as peak:
            for name, data in bombs.items():
                put(root, f"Attic/{name}", data)
            await wait_for(lambda: handled(watcher) == 4, "the four bombs")
    await still_alive(watcher, redis_client, names, root)

    print(f"bombs: peak memory growth {peak.growth_bytes / MIB:.1f} MiB")
    assert peak.growth_bytes < 100 * MIB
    corrupt = by_path(logs, "file.corrupt")
    assert sorted(corrupt) == [f"Attic/{name}" for name in sorted(bombs)]
    for record in corrupt.values():
        assert field(record, "reason") == "undecodable"
        assert "bomb" in field(record, "error")
    assert "limit of 50,000,000" in field(corrupt["Attic/over-limit.png"], "error")
    if bomb_warning == "always":  # in production Pillow only warns; HSI's own check refuses
        assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in warned)
        assert "100,000,000 pixels" in field(corrupt["Attic/pillow-warns.png"], "error")
    assert await files(redis_client, names, "attic") == []


async def test_files_beyond_the_size_limits_are_refused_without_being_read(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A 5 GiB .jpg and a 5 GiB .mp4 (sparse) end corrupt `too_large`, never opened."""
    folder = root / "Shed"
    folder.mkdir()
    with peak_memory() as peak:
        for name in ("huge.jpg", "huge.mp4"):
            with (folder / name).open("wb") as handle:
                handle.truncate(5 * GIB)
        await wait_for(lambda: handled(watcher) == 2, "the two huge files")
    await still_alive(watcher, redis_client, names, root)

    print(f"huge files: peak memory growth {peak.growth_bytes / MIB:.1f} MiB")
    assert peak.growth_bytes < 64 * MIB
    corrupt = by_path(logs, "file.corrupt")
    assert sorted(corrupt) == ["Shed/huge.jpg", "Shed/huge.mp4"]
    for record in corrupt.values():
        assert field(record, "reason") == "too_large"
        assert field(record, "size") == 5 * GIB
        assert field(record, "error") is None  # never probed: not a byte was read
    assert await files(redis_client, names, "shed") == []


# --- lying extensions and awkward names ------------------------------------------------------
async def test_content_decides_not_the_extension(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A PNG named .jpg is published as image/png; a JPEG named .mp4 and a GIF named .jpg are
    corrupt: only JPEG/PNG pictures and MP4/MOV/MKV/AVI clips are ever decoded."""
    put(root, "Yard/png-inside.jpg", as_png(COFFEE))
    put(root, "Yard/photo.mp4", ROCKET)
    gif = io.BytesIO()
    with Image.open(ASTRONAUT) as opened:
        opened.convert("P").save(gif, format="GIF")
    put(root, "Yard/gif-inside.jpg", gif.getvalue())
    clip = write_video(tmp_path / "clip.mp4", [(CAT, 0.4)])
    put(root, "Yard/clip-inside.jpg", clip)

    await wait_for(lambda: handled(watcher) == 4, "the four files")
    await still_alive(watcher, redis_client, names, root)

    ((_, entry),) = await files(redis_client, names, "yard")
    assert (entry.path, entry.mime, entry.media_kind) == (
        "Yard/png-inside.jpg",
        "image/png",
        "image",
    )
    corrupt = by_path(logs, "file.corrupt")
    assert sorted(corrupt) == ["Yard/clip-inside.jpg", "Yard/gif-inside.jpg", "Yard/photo.mp4"]
    assert "not an MP4/MOV, Matroska or AVI" in field(corrupt["Yard/photo.mp4"], "error")
    for name in ("Yard/gif-inside.jpg", "Yard/clip-inside.jpg"):
        assert "cannot identify image file" in field(corrupt[name], "error")


async def test_newlines_and_non_utf8_names_neither_break_logs_nor_the_watcher(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A newline in a name is published as is and logged on one line; a name that is not UTF-8
    (an old FTP client's Latin-1) is ignored with a warning instead of failing the publish."""
    put(root, "Porch/line\nbreak.jpg", ROCKET)
    (root / "Porch").mkdir(exist_ok=True)
    write_raw(os.fsencode(root / "Porch") + b"/caf\xe9.jpg", COFFEE)
    latin1_folder = os.fsencode(root) + b"/Gar\xe7age"
    os.mkdir(latin1_folder)
    write_raw(latin1_folder + b"/snap.jpg", ASTRONAUT)

    await wait_for(lambda: handled(watcher) == 3, "the three files")
    await still_alive(watcher, redis_client, names, root)

    ((_, entry),) = await files(redis_client, names, "porch")
    assert (entry.path, entry.sha256) == ("Porch/line\nbreak.jpg", sha256(ROCKET))
    (observed,) = [r for r in records(logs, "file.observed") if field(r, "camera") == "porch"]
    line = PlainFormatter().format(observed)
    assert "\n" not in line
    assert 'path="Porch/line\\nbreak.jpg"' in line
    refused = [r for r in records(logs, "file.ignored") if field(r, "reason") == "bad_encoding"]
    assert sorted(Path(field(r, "path")).relative_to(root).as_posix() for r in refused) == [
        "Gar\\xe7age/snap.jpg",
        "Porch/caf\\xe9.jpg",
    ]
    assert all(r.levelno == logging.WARNING for r in refused)
    assert all("\n" not in PlainFormatter().format(r) for r in refused)
    assert len(await published(redis_client, names)) == 2  # the newline one and the alive one


async def test_special_files_under_media_names_never_block_the_watcher(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A FIFO named .jpg, and a photo swapped for a FIFO while followed, are ignored with a
    warning; nothing ever waits for a writer on the pipe."""
    put(root, "Porch/photo.jpg", CAT)
    await wait_for(lambda: watcher.pending == 1, "the photo to be followed")
    os.mkfifo(root / "Porch" / ".fifo")
    (root / "Porch" / ".fifo").replace(root / "Porch" / "photo.jpg")
    os.mkfifo(root / "Porch" / "pipe.jpg")

    await wait_for(lambda: len(refusals(logs)) == 2, "two refusals")
    await still_alive(watcher, redis_client, names, root)

    assert refusals(logs) == {"pipe.jpg": "not_a_file", "photo.jpg": "not_a_file"}
    assert await files(redis_client, names, "porch") == []


# --- links out of the camera root ------------------------------------------------------------
async def test_links_out_of_the_root_are_never_read(
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    outside: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A hard link, a linked camera folder, and a file or folder swapped for a symlink while the
    watcher follows it: nothing outside the root is read, each refusal is a warning."""
    secret = put(outside, "secret.jpg", COFFEE)
    put(outside, "passwd", b"root:x:0:0:root:/root:/bin/bash\n" * 20)
    put(outside, "linked/old.jpg", ASTRONAUT)
    put(outside, "swapped/x.jpg", ROCKET)
    (root / "Kitchen").mkdir()
    # The first look at a file comes 0.3 s after its event: the swaps below, made as soon as the
    # files are followed, surely happen before it (and the folder swap never meets a look).
    config = replace(FAST, debounce_seconds=0.3, stable_seconds=0.3)
    async with Watcher(redis_client, names, root, config) as watcher:
        os.link(secret, root / "Kitchen" / "hard.jpg")
        os.link(outside / "passwd", root / "Kitchen" / "passwd.jpg")
        (root / "Linked").symlink_to(outside / "linked", target_is_directory=True)
        put(root, "Kitchen/swap.jpg", CAT)
        put(root, "Cellar/x.jpg", CAT)
        await wait_for(lambda: watcher.pending >= 4, "the files to be followed")
        link = root / "Kitchen" / ".swap-link"
        link.symlink_to(secret)
        link.replace(root / "Kitchen" / "swap.jpg")
        (root / "Cellar").rename(outside / "cellar-moved")
        (root / "Cellar").symlink_to(outside / "swapped", target_is_directory=True)
        put(outside, "linked/new.jpg", ROCKET)  # written through no link: no event at all

        await wait_for(lambda: len(refusals(logs)) == 6, "six refusals")
        await settled(watcher)
        await still_alive(watcher, redis_client, names, root)
        (linked,) = await watcher.ingest(root / "Linked" / "new.jpg")

    assert refusals(logs) == {
        "hard.jpg": "hard_link",
        "passwd.jpg": "hard_link",
        "Linked": "symlink_outside_root",
        "swap.jpg": "symlink_outside_root",
        "Cellar": "symlink_outside_root",
        "x.jpg": "symlink_outside_root",
        "new.jpg": "symlink_outside_root",
    }
    assert (linked.kind.value, linked.reason) == ("ignored", "symlink_outside_root")
    entries = await published(redis_client, names)
    assert [e.path for e in entries] == ["Alive/MDAlarm_20260101-120000.jpg"]
    outside_hashes = {sha256(p) for p in await asyncio.to_thread(files_under, outside)}
    assert not {e.sha256 for e in entries} & outside_hashes


async def test_links_found_by_the_start_up_scan_are_reported(
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    outside: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A camera folder that is a symlink out of the root, present before the start, is reported
    by the scan (never entered); its files are never published."""
    put(outside, "porch/a.jpg", CAT)
    (root / "Porch").symlink_to(outside / "porch", target_is_directory=True)
    async with Watcher(redis_client, names, root, FAST) as restarted:
        await settled(restarted)
        await still_alive(restarted, redis_client, names, root)
    (record,) = [r for r in records(logs, "file.ignored") if r.levelno == logging.WARNING]
    assert (field(record, "path"), field(record, "reason")) == (
        str(root / "Porch"),
        "symlink_outside_root",
    )
    assert await files(redis_client, names, "porch") == []


# --- moves and deletions ---------------------------------------------------------------------
async def test_files_and_folders_renamed_or_deleted_while_followed(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Renamed while followed: published once under the new name (a renamed camera folder is a
    new camera); deleted while followed: vanished, logged; renamed after publication: not again."""
    put(root, "Garage/a.jpg", CAT)
    await wait_for(lambda: watcher.pending == 1, "a.jpg to be followed")
    (root / "Garage" / "a.jpg").rename(root / "Garage" / "b.jpg")
    await wait_for(lambda: watcher.counts.observed == 1, "b.jpg")
    await settled(watcher)
    put(root, "Old Name/c.jpg", ROCKET)
    await wait_for(lambda: watcher.pending == 1, "c.jpg to be followed")
    (root / "Old Name").rename(root / "New Name")
    await wait_for(lambda: watcher.counts.observed == 2, "c.jpg")
    await settled(watcher)
    put(root, "Garage/d.jpg", COFFEE)
    await wait_for(lambda: watcher.pending == 1, "d.jpg to be followed")
    (root / "Garage" / "d.jpg").unlink()
    await wait_for(lambda: watcher.counts.vanished == 1, "d.jpg to vanish")
    await settled(watcher)

    (root / "Garage" / "b.jpg").rename(root / "Garage" / "e.jpg")
    (root / "New Name").rename(root / "Newest")
    put(root, "Newest/f.jpg", ASTRONAUT)
    await wait_for(lambda: watcher.counts.observed == 3, "f.jpg in the renamed folder")
    await still_alive(watcher, redis_client, names, root)

    assert [e.path for _, e in await files(redis_client, names, "garage")] == ["Garage/b.jpg"]
    assert await files(redis_client, names, "old_name") == []
    assert [e.path for _, e in await files(redis_client, names, "new_name")] == ["New Name/c.jpg"]
    assert [e.path for _, e in await files(redis_client, names, "newest")] == ["Newest/f.jpg"]
    vanished = by_path(logs, "file.vanished")
    assert field(vanished["Garage/d.jpg"], "moved") is False
    assert field(vanished["Garage/a.jpg"], "moved") is True
    assert field(vanished["Old Name/c.jpg"], "moved") is True
    assert watcher.counts.vanished == 1  # moves are not counted as vanished files
    assert watcher.counts.observed == 4


# --- the detector ----------------------------------------------------------------------------
async def test_detect_stage_turns_files_spoilt_after_observation_into_failures(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    outside: Path,
    logs: pytest.LogCaptureFixture,
    bombs: dict[str, bytes],
) -> None:
    """Files observed intact, then replaced by a 5 GiB file, a bomb, a symlink out of the root
    or nothing: one detection.failed each with the reason, bounded memory, all acknowledged."""
    photos = {
        "a.jpg": CAT,
        "b.jpg": ROCKET,
        "c.jpg": COFFEE,
        "d.jpg": ASTRONAUT,
        "e.jpg": CAMERAMAN,
    }
    for name, source in photos.items():
        put(root, f"Door/{name}", source)
    await wait_for(lambda: watcher.counts.observed == 5, "five photos")
    await settled(watcher)
    folder = root / "Door"
    with (folder / "a.jpg").open("wb") as handle:
        handle.truncate(5 * GIB)
    (folder / "b.jpg").unlink()
    (folder / "b.jpg").write_bytes(bombs["pillow-warns.png"])
    (folder / "c.jpg").unlink()
    (folder / "c.jpg").symlink_to(put(outside, "c.jpg", COFFEE))
    (folder / "d.jpg").unlink()

    stream = names.files("door")
    await ensure_group(redis_client, stream, Group.DETECT.value)
    reply: Any = await redis_client.xreadgroup(Group.DETECT.value, "test", {stream: ">"})
    entries: list[StreamEntry] = [(i.decode(), f) for i, f in reply[0][1]]
    detector = EmbeddedDetector(confidence_threshold=0.35)
    try:
        await detector.detect(CAMERAMAN, "image")  # the ONNX session loads before measuring
        stage = DetectStage(redis=redis_client, names=names, detector=detector, camera_root=root)
        with warnings.catch_warnings(), peak_memory() as peak:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # as in production
            result = await stage.handle(stream, entries)
    finally:
        await detector.aclose()

    assert result.failed == {}
    rows = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]",
        await redis_client.xrange(names.detections("door")),
    )
    outputs = [read_fields(fields)[0] for _, fields in rows]
    completed = [e for e in outputs if isinstance(e, DetectionCompleted)]
    failed = {e.path: e for e in outputs if isinstance(e, DetectionFailed)}
    assert [e.path for e in completed] == ["Door/e.jpg"]
    assert "person" in {o.label for o in completed[0].objects}
    assert sorted(failed) == ["Door/a.jpg", "Door/b.jpg", "Door/c.jpg", "Door/d.jpg"]
    assert len(outputs) == 5
    assert "more than the limit of 67,108,864 bytes" in failed["Door/a.jpg"].error
    assert "decompression bomb" in failed["Door/b.jpg"].error
    assert "resolves outside its folder" in failed["Door/c.jpg"].error
    assert "cannot be read" in failed["Door/d.jpg"].error
    assert len(records(logs, "detect.undecodable")) == 4
    pending = await redis_client.xpending(stream, Group.DETECT.value)
    assert pending["pending"] == 0
    print(f"detect: peak memory growth {peak.growth_bytes / MIB:.1f} MiB")
    assert peak.growth_bytes < 64 * MIB
    await still_alive(watcher, redis_client, names, root)

"""The watcher against real files and the real Redis: complete, new uploads are published once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis

from streams.envelope import read_fields
from streams.names import StreamNames
from streams.schemas import CameraRegistered, Entry, FileObserved
from streams.watch import OutcomeKind, WatchConfig, Watcher, WatchError
from tests.fakes.media import photo, write_video

# watchdog 7 (inotify) warns when a new folder's sub-folder gets its watch twice — once from the
# recursive walk on the parent's creation, once from the sub-folder's own creation event — and
# then just reuses the watch. Harmless, but raised on watchdog's reader thread it would end that
# thread under the suite's warnings-as-errors, so it is ignored here.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

FAST = WatchConfig(
    stable_seconds=0.2,
    incomplete_timeout_seconds=1.0,
    poll_interval=0.1,
    debounce_seconds=0.02,
    min_image_bytes=100,
    min_video_bytes=100,
    timezone="Europe/Berlin",
)
CAT = photo("cat-chelsea.jpg")
ASTRONAUT = photo("person-astronaut.jpg")
ROCKET = photo("empty-rocket.jpg")
COFFEE = photo("empty-coffee.jpg")
TIMEOUT = 10.0


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "cameras"
    folder.mkdir()
    return folder


@pytest.fixture
async def watcher(redis_client: Redis, names: StreamNames, root: Path) -> AsyncIterator[Watcher]:
    async with Watcher(redis_client, names, root, FAST) as running:
        yield running


# --- helpers -------------------------------------------------------------------------------------
def put(root: Path, relative: str, source: Path | bytes) -> Path:
    """Copy a photo (or write bytes) to `root/relative`, making folders on the way."""
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(source, target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def entries(client: Redis, key: str) -> list[tuple[str, Entry, dict[str, object]]]:
    """The entries of a stream: id, entry, headers."""
    found = []
    rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(key))
    for entry_id, fields in rows:
        entry, headers = read_fields(fields)
        found.append((entry_id.decode(), entry, headers))
    return found


async def files(client: Redis, names: StreamNames, camera: str) -> list[FileObserved]:
    return [
        e for _, e, _ in await entries(client, names.files(camera)) if isinstance(e, FileObserved)
    ]


async def wait_for(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], what: str
) -> None:
    """Wait until `condition` holds, failing after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")
        await asyncio.sleep(0.02)


async def settled(watcher: Watcher) -> None:
    """Wait until the watcher follows no file and its start-up scan is done."""
    await wait_for(lambda: watcher.pending == 0 and not watcher.scanning, "the watcher to settle")


# --- tests ----------------------------------------------------------------------------------------
async def test_copied_photos_are_observed_once_each(
    watcher: Watcher, redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """Photos copied into a camera folder give one file.observed each and one camera.registered."""
    copies = {
        "Front Door/snap/MDAlarm_20260101-120000.jpg": CAT,
        "Front Door/snap/MDAlarm_20260101-120005.jpg": ASTRONAUT,
        "Front Door/IMG_0001.JPG": ROCKET,
    }
    for relative, source in copies.items():
        put(root, relative, source)

    await wait_for(lambda: watcher.counts.observed == 3, "three observed files")
    await settled(watcher)

    observed = {entry.path: entry for entry in await files(redis_client, names, "front_door")}
    assert sorted(observed) == sorted(copies)
    for relative, source in copies.items():
        entry = observed[relative]
        assert entry.sha256 == sha256(source)
        assert entry.size == source.stat().st_size
        assert (entry.media_kind, entry.mime) == ("image", "image/jpeg")
    first = observed["Front Door/snap/MDAlarm_20260101-120000.jpg"]
    assert first.captured_at == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)  # noon in Berlin
    assert first.capture_source == "filename"
    assert observed["Front Door/IMG_0001.JPG"].capture_source == "mtime"
    cameras = [e for _, e, _ in await entries(redis_client, names.cameras)]
    assert cameras == [
        CameraRegistered(
            camera_id="front_door",
            name="Front Door",
            folder="Front Door",
            registered_at=cameras[0].registered_at,  # type: ignore[union-attr]
        )
    ]
    assert await redis_client.smembers(names.camera_set) == {b"front_door"}
    assert watcher.counts.cameras_registered == 1


async def test_slowly_written_photo_is_observed_once_when_complete(
    watcher: Watcher, redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """A photo uploaded in chunks over 1.5 s is published once, with the complete file's hash."""
    data = ASTRONAUT.read_bytes()
    target = root / "Back Yard" / "MDAlarm_20260101-120000.jpg"
    target.parent.mkdir()
    finished: list[float] = []

    def upload() -> None:
        chunk = len(data) // 5 + 1
        with target.open("wb") as handle:
            for start in range(0, len(data), chunk):
                handle.write(data[start : start + chunk])
                handle.flush()
                time.sleep(0.3)  # the slow camera, not the test, waits here
        finished.append(time.time())

    writer = threading.Thread(target=upload)
    writer.start()
    try:
        await wait_for(lambda: watcher.counts.observed == 1, "the slow upload to be observed")
    finally:
        await asyncio.to_thread(writer.join)
    await settled(watcher)

    (entry,) = await files(redis_client, names, "back_yard")
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.size == len(data)
    assert entry.observed_at.timestamp() >= finished[0] - 0.35  # not before the last chunk
    assert watcher.counts.corrupt == 0


async def test_duplicates_are_skipped_even_after_a_restart(
    redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """The same bytes under another name, or seen by a new watcher, are not published again."""
    async with Watcher(redis_client, names, root, FAST) as first:
        put(root, "Garage/a.jpg", CAT)
        await wait_for(lambda: first.counts.observed == 1, "the first copy")
        put(root, "Garage/b.jpg", CAT)
        await wait_for(lambda: first.counts.duplicates == 1, "the duplicate")
        await settled(first)

    async with Watcher(redis_client, names, root, FAST) as second:
        put(root, "Garage/c.jpg", CAT)
        # c.jpg, plus a.jpg and b.jpg found again by the start-up scan
        await wait_for(lambda: second.counts.duplicates == 3, "three duplicates after restart")
        await settled(second)
        assert second.counts.observed == 0
        assert second.counts.cameras_registered == 0

    (entry,) = await files(redis_client, names, "garage")
    assert entry.path == "Garage/a.jpg"
    assert len(await entries(redis_client, names.cameras)) == 1
    marker = await redis_client.get(names.seen("garage", sha256(CAT)))
    first_id = (await entries(redis_client, names.files("garage")))[0][0]
    assert marker == first_id.encode()  # the marker holds the entry id of the first sighting
    assert 0 < await redis_client.ttl(names.seen("garage", sha256(CAT))) <= FAST.dedupe_ttl


async def test_corrupt_files_are_reported_once_after_the_timeout(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Random bytes and a truncated JPEG give no entry and one corrupt report each."""
    caplog.set_level(logging.INFO, logger="hsi.watch")
    started = time.monotonic()
    noise = put(root, "Garage/noise.jpg", os.urandom(30_000))
    cut = put(root, "Garage/cut.jpg", ASTRONAUT.read_bytes()[:30_000])

    await wait_for(lambda: watcher.counts.corrupt == 2, "two corrupt reports")
    assert time.monotonic() - started >= FAST.incomplete_timeout_seconds
    for path in (noise, cut):  # closing without writing: an event, but an unchanged file
        with path.open("ab"):
            pass
    put(root, "Garage/good.jpg", CAT)
    await wait_for(lambda: watcher.counts.observed == 1, "the good photo")
    await settled(watcher)

    assert watcher.counts.corrupt == 2
    assert [entry.path for entry in await files(redis_client, names, "garage")] == [
        "Garage/good.jpg"
    ]
    reports = [r for r in caplog.records if r.getMessage() == "file.corrupt"]
    assert sorted(r.path for r in reports) == ["Garage/cut.jpg", "Garage/noise.jpg"]  # type: ignore[attr-defined]
    assert {r.reason for r in reports} == {"undecodable"}  # type: ignore[attr-defined]


async def test_video_is_observed_as_a_video(
    watcher: Watcher, redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """A clip recorded into a camera folder gives one entry of media kind video."""
    folder = root / "Front Door" / "record"
    folder.mkdir(parents=True)
    clip = await asyncio.to_thread(
        write_video, folder / "alarm_20260101_120000.mkv", [(CAT, 0.6), (ASTRONAUT, 0.6)]
    )

    await wait_for(lambda: watcher.counts.observed == 1, "the clip")
    await settled(watcher)

    (entry,) = await files(redis_client, names, "front_door")
    assert (entry.media_kind, entry.mime) == ("video", "video/x-matroska")
    assert entry.sha256 == sha256(clip)
    assert entry.captured_at == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)


async def test_start_scan_observes_recent_files_already_there(
    redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """Files present before the start are observed, except those older than the scan limit."""
    put(root, "Porch/one.jpg", CAT)
    put(root, "Porch/sub/two.jpg", ROCKET)
    old = put(root, "Porch/old.jpg", COFFEE)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    config = replace(FAST, scan_max_age_seconds=3600)

    async with Watcher(redis_client, names, root, config) as watcher:
        await wait_for(lambda: watcher.counts.observed == 2, "the two recent files")
        await settled(watcher)

    paths = sorted(entry.path for entry in await files(redis_client, names, "porch"))
    assert paths == ["Porch/one.jpg", "Porch/sub/two.jpg"]


async def test_ingest_reports_each_file(
    redis_client: Redis, names: StreamNames, root: Path, tmp_path: Path
) -> None:
    """`ingest` of a folder observes new files and reports duplicates and ignored ones."""
    put(root, "Garage/2026/a.jpg", CAT)
    put(root, "Garage/2026/b.jpg", CAT)
    put(root, "Garage/2026/c.png", b"\x89PNG not really")
    put(root, "Garage/2026/notes.txt", b"hello")
    watcher = Watcher(redis_client, names, root, replace(FAST, incomplete_timeout_seconds=0.4))

    outcomes = {o.path.name: o for o in await watcher.ingest(root / "Garage")}

    assert outcomes["notes.txt"].kind is OutcomeKind.IGNORED
    assert outcomes["notes.txt"].reason == "not_media"
    assert outcomes["c.png"].kind is OutcomeKind.CORRUPT
    kinds = sorted((outcomes["a.jpg"].kind, outcomes["b.jpg"].kind))
    assert kinds == [OutcomeKind.DUPLICATE, OutcomeKind.OBSERVED]
    assert outcomes["a.jpg"].entry_id == outcomes["b.jpg"].entry_id  # the duplicate names it
    (again,) = await watcher.ingest(root / "Garage" / "2026" / "a.jpg")
    assert again.kind is OutcomeKind.DUPLICATE
    outside = put(tmp_path, "elsewhere/x.jpg", CAT)
    (stranger,) = await watcher.ingest(outside)
    assert (stranger.kind, stranger.reason) == (OutcomeKind.IGNORED, "outside_root")
    with pytest.raises(WatchError, match="does not exist"):
        await watcher.ingest(root / "missing")
    assert len(await files(redis_client, names, "garage")) == 1
    assert watcher.counts.observed == 1


async def test_ignored_files_publish_nothing(
    watcher: Watcher, redis_client: Redis, names: StreamNames, root: Path, tmp_path: Path
) -> None:
    """Non-media, hidden, temporary, loose files and symlinks leaving the root are ignored."""
    put(root, "Front Door/notes.txt", b"not media")
    put(root, "Front Door/.hidden.jpg", CAT)
    put(root, "Front Door/upload.jpg.part", CAT)
    put(root, "loose.jpg", CAT)
    secret = put(tmp_path, "secret/private.jpg", ROCKET)
    (root / "Front Door" / "leak.jpg").symlink_to(secret)
    await wait_for(lambda: watcher.counts.ignored == 5, "five ignored files")
    put(root, "Front Door/real.jpg", ASTRONAUT)
    await wait_for(lambda: watcher.counts.observed == 1, "the real photo")
    await settled(watcher)

    assert [e.path for e in await files(redis_client, names, "front_door")] == [
        "Front Door/real.jpg"
    ]
    assert watcher.counts.ignored == 5


async def test_a_second_folder_for_one_camera_id_is_refused(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ "Front Door" and "front_door" map to one camera id: the first folder keeps it, the
    second one's files are refused with a warning naming both (never mixed into the camera)."""
    put(root, "Front Door/a.jpg", CAT)
    await wait_for(lambda: watcher.counts.observed == 1, "the first folder's photo")
    with caplog.at_level(logging.WARNING, logger="streams.watch"):
        put(root, "front_door/b.jpg", ASTRONAUT)
        put(root, "front_door/c.jpg", ROCKET)
        await wait_for(lambda: watcher.counts.ignored == 2, "the second folder's photos refused")
    await settled(watcher)
    assert [e.path for e in await files(redis_client, names, "front_door")] == ["Front Door/a.jpg"]
    taken = [r for r in caplog.records if r.getMessage() == "watch.camera_id_taken"]
    assert len(taken) == 1  # once per folder
    assert "'Front Door' and 'front_door'" in taken[0].__dict__["detail"]
    # a restarted watcher keeps the same owner, whichever folder it happens to scan first
    async with Watcher(redis_client, names, root, FAST) as again:
        put(root, "front_door/d.jpg", COFFEE)
        await wait_for(lambda: again.counts.ignored >= 1, "the restarted watcher's refusal")
        await settled(again)
    assert [e.path for e in await files(redis_client, names, "front_door")] == ["Front Door/a.jpg"]


async def test_upload_renamed_from_a_temporary_name_is_observed(
    watcher: Watcher, redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """An FTP upload written under a temporary name and renamed at the end is observed once."""
    temporary = put(root, "Garage/.pureftpd-upload.1234.jpg", ROCKET)
    temporary.rename(root / "Garage" / "MDAlarm_20260101-120000.jpg")

    await wait_for(lambda: watcher.counts.observed == 1, "the renamed upload")
    await settled(watcher)

    (entry,) = await files(redis_client, names, "garage")
    assert entry.path == "Garage/MDAlarm_20260101-120000.jpg"


async def test_polling_mode_observes_new_files(
    redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """With polling (network shares) new files are observed too."""
    async with Watcher(redis_client, names, root, replace(FAST, polling=True)) as watcher:
        put(root, "Driveway/MDAlarm_20260101-120000.jpg", CAT)
        put(root, "Driveway/snap/b.jpg", COFFEE)
        await wait_for(lambda: watcher.counts.observed == 2, "two files by polling")
        await settled(watcher)

    assert len(await files(redis_client, names, "driveway")) == 2


async def test_vanishing_files_and_renamed_folders_do_not_stop_the_watcher(
    watcher: Watcher, redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """Files deleted at once, a renamed camera folder and unicode names leave it observing."""
    put(root, "Garage/first.jpg", CAT)
    await wait_for(lambda: watcher.counts.observed == 1, "the first photo")
    for index in range(5):
        gone = put(root, f"Garage/gone {index}.jpg", ASTRONAUT.read_bytes()[:5000])
        gone.unlink()
    (root / "Garage").rename(root / "Garage 2")
    put(root, "Garage 2/after rename.jpg", ROCKET)
    put(root, "Café Entrée/snap/photo 1 – été.jpg", COFFEE)

    await wait_for(lambda: watcher.counts.observed == 3, "the photos after the rename")
    await settled(watcher)

    assert [e.path for e in await files(redis_client, names, "garage_2")] == [
        "Garage 2/after rename.jpg"
    ]
    assert [e.path for e in await files(redis_client, names, "cafe_entree")] == [
        "Café Entrée/snap/photo 1 – été.jpg"
    ]
    assert watcher.counts.failed == 0


async def test_hooks_receive_entries_and_add_headers(
    redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """`headers_factory` adds entry headers; `on_observed` gets each entry with its id."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seen: list[tuple[str, str]] = []

    async def on_observed(entry: FileObserved, entry_id: str) -> None:
        seen.append((entry.path, entry_id))

    async with Watcher(
        redis_client,
        names,
        root,
        FAST,
        headers_factory=lambda entry: {"traceparent": traceparent},
        on_observed=on_observed,
    ) as watcher:
        put(root, "Garage/a.jpg", CAT)
        await wait_for(lambda: len(seen) == 1, "the hook")
        await settled(watcher)

    ((entry_id, entry, headers),) = await entries(redis_client, names.files("garage"))
    assert seen == [("Garage/a.jpg", entry_id)]
    assert headers["traceparent"] == traceparent
    assert isinstance(entry, FileObserved)


async def test_redis_errors_delay_a_file_without_losing_it(
    watcher: Watcher,
    redis_client: Redis,
    names: StreamNames,
    root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publish that Redis refuses is retried with backoff until it succeeds."""
    caplog.set_level(logging.WARNING, logger="hsi.watch")
    marker = names.seen("garage", sha256(CAT))
    await redis_client.rpush(marker, "in the way")  # the script's GET fails with WRONGTYPE
    put(root, "Garage/a.jpg", CAT)

    def refused() -> bool:
        return any(r.getMessage() == "watch.redis_failed" for r in caplog.records)

    await wait_for(refused, "a refused publish")
    assert watcher.pending == 1
    await redis_client.delete(marker)
    await wait_for(lambda: watcher.counts.observed == 1, "the retried publish")

    (entry,) = await files(redis_client, names, "garage")
    assert entry.path == "Garage/a.jpg"
    assert watcher.counts.failed == 0


async def test_start_refuses_a_missing_root(
    redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """Starting on a camera root that does not exist fails with what to fix."""
    watcher = Watcher(redis_client, names, tmp_path / "nowhere", FAST)
    with pytest.raises(WatchError, match="not a folder"):
        await watcher.start()


async def test_a_closed_half_upload_is_never_published_and_its_resumption_is(
    redis_client: Redis, names: StreamNames, root: Path
) -> None:
    """A writer that closes half a photo and appends the rest later (an FTP resume): the close
    does not make the half file ready, because it does not decode; the complete file is
    published once, with the complete file's hash, as soon as its writer closes it."""
    config = replace(
        FAST, close_debounce_seconds=0.0, stable_seconds=5.0, incomplete_timeout_seconds=10.0
    )
    whole = CAT.read_bytes()
    target = root / "Porch" / "resumed.jpg"
    target.parent.mkdir()
    async with Watcher(redis_client, names, root, config) as watcher:
        await settled(watcher)
        with target.open("wb") as upload:
            upload.write(whole[: len(whole) // 2])
        await asyncio.sleep(0.5)  # the close was seen; no stability wait would be over yet
        assert await files(redis_client, names, "porch") == []
        started = time.monotonic()
        with target.open("ab") as upload:
            upload.write(whole[len(whole) // 2 :])
        await wait_for(lambda: watcher.pending == 0, "the resumed upload to be taken")
        taken = time.monotonic() - started
    (observed,) = await files(redis_client, names, "porch")
    assert observed.sha256 == hashlib.sha256(whole).hexdigest()
    assert taken < config.stable_seconds  # taken on its close, not after the stability wait

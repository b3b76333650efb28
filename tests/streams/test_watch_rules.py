"""The watch stage's decisions: capture times, classification, readiness, config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streams.watch.candidates import (
    Candidate,
    Ignored,
    IgnoreReason,
    admitted_by_scan,
    classify,
    media_kind_of,
)
from streams.watch.capture import (
    capture_time,
    capture_time_from_name,
    exif_capture_time,
    parse_exif_time,
)
from streams.watch.config import WatchConfig, WatchConfigError
from streams.watch.readiness import (
    Decision,
    GiveUp,
    Observation,
    Ready,
    Wait,
    readiness,
    record,
)
from tests.fakes.media import jpeg_with_exif, photo

NOON = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# --- capture time from the file name ---------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MDAlarm_20260101-120000.jpg", NOON),
        ("Schedule_20260101-120000.jpg", NOON),
        ("alarm_20260101_120000.mkv", NOON),
        ("MDalarm_20260101_120000.avi", NOON),
        ("schedule_20260101_120000.avi", NOON),
        ("20260101120000.jpg", NOON),
        ("snap_2026-01-01_12-00-00.jpg", NOON),
        ("2026-01-01 12.00.00.mp4", NOON),
        ("2026-01-01T12:00:00.jpg", NOON),
        ("IMG_20260101T120000.JPG", NOON),
        ("Front_00_20260101120000.jpg", NOON),
        ("MDAlarm_20260101-120000_2.jpg", NOON),
        (
            "192.168.1.64_01_20260101120000123_MOTION_DETECTION.jpg",
            NOON.replace(microsecond=123_000),
        ),
        ("IMG_20260315_083015.jpeg", datetime(2026, 3, 15, 8, 30, 15, tzinfo=UTC)),
    ],
)
def test_capture_time_from_camera_file_names(name: str, expected: datetime) -> None:
    """Foscam and other camera naming patterns yield the capture time."""
    found = capture_time_from_name(name, "UTC")
    assert found == expected
    assert found is not None
    assert found.tzinfo is not None


BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("name", "mtime_utc", "expected_utc"),
    [
        # summer time ends 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice
        (
            "MDAlarm_20261025-023000.jpg",
            datetime(2026, 10, 25, 0, 30, 5, tzinfo=UTC),
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        ),  # the first 02:30 (CEST)
        (
            "MDAlarm_20261025-023000.jpg",
            datetime(2026, 10, 25, 1, 30, 5, tzinfo=UTC),
            datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
        ),  # the second 02:30 (CET)
        # summer time begins 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 never happens
        (
            "MDAlarm_20260329-023000.jpg",
            datetime(2026, 3, 29, 1, 30, 5, tzinfo=UTC),
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        ),
        (
            "MDAlarm_20260329-023000.jpg",
            datetime(2026, 3, 29, 0, 30, 5, tzinfo=UTC),
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        ),
        # ordinary times are what they say, whatever the modification time
        (
            "MDAlarm_20261025-043000.jpg",
            datetime(2026, 10, 26, 12, 0, tzinfo=UTC),
            datetime(2026, 10, 25, 3, 30, tzinfo=UTC),
        ),
        (
            "MDAlarm_20260715-101500.jpg",
            datetime(2026, 7, 15, 8, 15, 2, tzinfo=UTC),
            datetime(2026, 7, 15, 8, 15, tzinfo=UTC),
        ),
    ],
)
def test_a_wall_time_of_a_clock_change_is_the_instant_nearest_the_upload(
    name: str, mtime_utc: datetime, expected_utc: datetime
) -> None:
    """The hour repeated (or skipped) when summer time ends (or begins) in TIMEZONE: the file
    name's local time is taken as the instant nearer to when the file was written, so the second
    02:30 of the night is not an hour early (and not 'late')."""
    found = capture_time_from_name(name, BERLIN, near=mtime_utc.timestamp())
    assert found is not None
    assert found == expected_utc
    exif = parse_exif_time(
        name[8:12]
        + ":"
        + name[12:14]
        + ":"
        + name[14:16]
        + " "
        + name[17:19]
        + ":"
        + name[19:21]
        + ":"
        + name[21:23],
        None,
        BERLIN,
        near=mtime_utc.timestamp(),
    )
    assert exif == expected_utc


@pytest.mark.parametrize(
    "name",
    [
        "photo.jpg",
        "MDAlarm_20261301-120000.jpg",  # month 13
        "MDAlarm_20260132-120000.jpg",  # day 32
        "MDAlarm_20260101-250000.jpg",  # hour 25
        "cam_12340101120000.jpg",  # year 1234: a serial number
        "20260101.jpg",  # a date without a time
        "MDAlarm_20260101-1200.jpg",  # a time without seconds
        "x_202601011200001.jpg",  # 15 digits: no pattern fits
    ],
)
def test_capture_time_from_name_none_without_a_time(name: str) -> None:
    """Names without a plausible date and time give None."""
    assert capture_time_from_name(name, "UTC") is None


@pytest.mark.parametrize(
    ("tz", "name", "utc"),
    [
        ("Europe/Berlin", "MDAlarm_20260101-120000.jpg", datetime(2026, 1, 1, 11, tzinfo=UTC)),
        ("Europe/Berlin", "MDAlarm_20260701-120000.jpg", datetime(2026, 7, 1, 10, tzinfo=UTC)),
        ("America/New_York", "alarm_20260101_120000.mkv", datetime(2026, 1, 1, 17, tzinfo=UTC)),
    ],
)
def test_capture_time_from_name_uses_the_configured_zone(tz: str, name: str, utc: datetime) -> None:
    """Naive names are local times of the configured zone, daylight saving included."""
    found = capture_time_from_name(name, tz)
    assert found == utc
    assert found is not None
    assert found.tzinfo == ZoneInfo(tz)


# --- capture time from EXIF and mtime -----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [
        ("2025:06:01 08:30:00", None, datetime(2025, 6, 1, 8, 30, tzinfo=ZoneInfo("Europe/Paris"))),
        (
            "2025:06:01 08:30:00",
            "+02:00",
            datetime(2025, 6, 1, 8, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2025:06:01 08:30:00",
            "-05:30",
            datetime(2025, 6, 1, 8, 30, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        ("2025:06:01 08:30:00\x00", "bogus", datetime(2025, 6, 1, 6, 30, tzinfo=UTC)),
        ("0000:00:00 00:00:00", None, None),
        ("    :  :     :  :  ", None, None),
        ("2025-06-01 08:30:00", None, None),
    ],
)
def test_parse_exif_time(value: str, offset: str | None, expected: datetime | None) -> None:
    """EXIF times use their offset when given, else the configured zone; blanks give None."""
    assert parse_exif_time(value, offset, "Europe/Paris") == expected


def test_capture_time_prefers_name_then_exif_then_mtime(tmp_path: Path) -> None:
    """The file name wins over EXIF, EXIF over the mtime."""
    taken = jpeg_with_exif(tmp_path / "x.jpg", photo("cat-chelsea.jpg"), "2025:06:01 08:30:00")
    mtime = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    exif_time = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    mtime_time = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    assert capture_time(taken, "MDAlarm_20260101-120000.jpg", "UTC", mtime) == (NOON, "filename")
    assert capture_time(taken, taken.name, "UTC", mtime) == (exif_time, "exif")
    assert capture_time(taken, taken.name, "UTC", mtime, read_exif=False) == (mtime_time, "mtime")
    plain = photo("cat-chelsea.jpg")
    assert capture_time(plain, plain.name, "UTC", mtime) == (mtime_time, "mtime")


def test_exif_capture_time_reads_offset_and_survives_garbage(tmp_path: Path) -> None:
    """EXIF with an offset is read aware; a non-image gives None instead of an error."""
    taken = jpeg_with_exif(
        tmp_path / "x.jpg", photo("cat-chelsea.jpg"), "2025:06:01 08:30:00", "+02:00"
    )
    assert exif_capture_time(taken, "UTC") == datetime(2025, 6, 1, 6, 30, tzinfo=UTC)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    assert exif_capture_time(garbage, "UTC") is None
    assert exif_capture_time(tmp_path / "missing.jpg", "UTC") is None


# --- classification ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("relative", "camera", "folder", "kind", "mime"),
    [
        ("Front Door/snap/MDAlarm_1.jpg", "front_door", "Front Door", "image", "image/jpeg"),
        ("Front Door/record/alarm_1.mkv", "front_door", "Front Door", "video", "video/x-matroska"),
        ("Garage/IMG.JPG", "garage", "Garage", "image", "image/jpeg"),
        ("Garage/a/b/c/x.jpeg", "garage", "Garage", "image", "image/jpeg"),
        ("Garage/x.PNG", "garage", "Garage", "image", "image/png"),
        ("Garage/clip.MOV", "garage", "Garage", "video", "video/quicktime"),
        ("Garage/clip.mp4", "garage", "Garage", "video", "video/mp4"),
        ("Garage/clip.avi", "garage", "Garage", "video", "video/x-msvideo"),
        ("Café Entrée/photo 1 – été.jpg", "cafe_entree", "Café Entrée", "image", "image/jpeg"),
    ],
)  # fmt: skip
def test_classify_media_of_a_camera(
    tmp_path: Path, relative: str, camera: str, folder: str, kind: str, mime: str
) -> None:
    """Media under a camera folder become candidates of that camera, kind and MIME by extension."""
    verdict = classify(tmp_path / relative, tmp_path)
    assert verdict == Candidate(
        path=tmp_path / relative,
        relative=relative,
        camera_id=camera,
        camera_folder=folder,
        media_kind="video" if kind == "video" else "image",
        mime=mime,
    )


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("loose.jpg", IgnoreReason.NO_CAMERA_FOLDER),
        ("Garage/.hidden.jpg", IgnoreReason.HIDDEN),
        ("Garage/.pureftpd-upload.5f3a.jpg", IgnoreReason.HIDDEN),
        (".trash/Garage/x.jpg", IgnoreReason.HIDDEN),
        ("Garage/.sync/x.jpg", IgnoreReason.HIDDEN),
        ("Garage/x.jpg.part", IgnoreReason.TEMPORARY),
        ("Garage/x.jpg.tmp", IgnoreReason.TEMPORARY),
        ("Garage/x.JPG.PART", IgnoreReason.TEMPORARY),
        ("Garage/x.jpg~", IgnoreReason.TEMPORARY),
        ("Garage/~x.jpg", IgnoreReason.TEMPORARY),
        ("Garage/x.mp4.filepart", IgnoreReason.TEMPORARY),
        ("Garage/notes.txt", IgnoreReason.NOT_MEDIA),
        ("Garage/noextension", IgnoreReason.NOT_MEDIA),
        ("Garage/x.gif", IgnoreReason.NOT_MEDIA),
        ("---/x.jpg", IgnoreReason.BAD_CAMERA_NAME),
        ("../elsewhere/Garage/x.jpg", IgnoreReason.OUTSIDE_ROOT),
    ],
)
def test_classify_ignores_with_a_reason(
    tmp_path: Path, relative: str, reason: IgnoreReason
) -> None:
    """Loose, hidden, temporary, non-media and outside files are ignored with their reason."""
    root = tmp_path / "cameras"
    path = root / relative
    assert classify(path, root) == Ignored(path, reason)


def test_classify_refuses_symlinks_leaving_the_root(tmp_path: Path) -> None:
    """A symlink resolving outside the root is ignored; one resolving inside it is not."""
    root = tmp_path / "cameras"
    (root / "Garage").mkdir(parents=True)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    inside = root / "Garage" / "real.jpg"
    inside.write_bytes(b"x")
    leaving = root / "Garage" / "leak.jpg"
    leaving.symlink_to(outside)
    staying = root / "Garage" / "alias.jpg"
    staying.symlink_to(inside)
    linked_folder = root / "Porch"
    linked_folder.symlink_to(tmp_path, target_is_directory=True)

    assert classify(leaving, root) == Ignored(leaving, IgnoreReason.SYMLINK_OUTSIDE_ROOT)
    assert isinstance(classify(staying, root), Candidate)
    via_folder = linked_folder / "secret.jpg"
    assert classify(via_folder, root) == Ignored(via_folder, IgnoreReason.SYMLINK_OUTSIDE_ROOT)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.jpg", "image"), ("a.JpEg", "image"), ("a.mkv", "video"), ("a.txt", None), ("jpg", None)],
)
def test_media_kind_by_extension(name: str, kind: str | None) -> None:
    """Media kinds come from the extension, case-insensitively."""
    assert media_kind_of(name) == kind


@pytest.mark.parametrize(
    ("age", "admitted"), [(0.0, True), (3599.0, True), (3600.0, True), (3601.0, False)]
)
def test_start_scan_age_limit(age: float, admitted: bool) -> None:
    """The start-up scan takes files modified within the age limit only."""
    now = 1_800_000_000.0
    assert admitted_by_scan(now - age, now, 3600.0) is admitted


# --- readiness ----------------------------------------------------------------------------
CONFIG = WatchConfig(
    stable_seconds=1.0, incomplete_timeout_seconds=5.0, min_image_bytes=100, min_video_bytes=1000
)


def look(at: float, size: int | None, decodable: bool | None = None, mtime: int = 1) -> Observation:
    return Observation(at=at, size=size, mtime_ns=mtime, decodable=decodable)


@pytest.mark.parametrize(
    ("history", "now", "kind", "expected"),
    [
        pytest.param([], 0.0, "image", Wait("settling", 0.0), id="nothing-seen"),
        pytest.param([look(0, None)], 0.0, "image", GiveUp("vanished", corrupt=False), id="gone"),
        pytest.param([look(0, 500)], 0.5, "image", Wait("settling", 1.0), id="first-look"),
        pytest.param(
            [look(0, 500), look(0.5, 500)], 1.0, "image", Wait("probe", 1.0), id="stable-probe"
        ),
        pytest.param([look(0, 400), look(1, 500)], 1.5, "image", Wait("settling", 2.0), id="grew"),
        pytest.param(
            [look(0, 500, mtime=1), look(1, 500, mtime=2)],
            1.0,
            "image",
            Wait("settling", 2.0),
            id="rewritten-same-size",
        ),
        pytest.param(
            [look(0, 500), look(1, 500, decodable=True)], 1.0, "image", Ready(), id="decodes"
        ),
        pytest.param(
            [look(0, 500), look(1, 500, decodable=False)],
            1.0,
            "image",
            Wait("incomplete", 2.0),
            id="half-written",
        ),
        pytest.param(
            [look(0, 500), look(1, 500, decodable=False)],
            4.5,
            "image",
            Wait("incomplete", 5.0),
            id="half-written-near-timeout",
        ),
        pytest.param(
            [look(0, 500), look(1, 500, decodable=False), look(5, 500)],
            5.0,
            "image",
            GiveUp("undecodable", corrupt=True),
            id="never-completes",
        ),
        pytest.param(
            [look(0, 500), look(1, 500, decodable=False), look(2, 500, decodable=True)],
            2.0,
            "image",
            Ready(),
            id="last-probe-wins",
        ),
        pytest.param(
            [look(0, 400, decodable=True), look(1, 500), look(2, 500)],
            2.0,
            "image",
            Wait("probe", 2.0),
            id="probe-of-older-size-ignored",
        ),
        pytest.param(
            [look(0, 50), look(1, 50)], 1.0, "image", Wait("too_small", 2.0), id="too-small"
        ),
        pytest.param(
            [look(0, 50), look(5, 50)],
            5.0,
            "image",
            GiveUp("too_small", corrupt=True),
            id="stays-too-small",
        ),
        pytest.param(
            [look(0, 500), look(1, 500)], 1.0, "video", Wait("too_small", 2.0), id="video-minimum"
        ),
        pytest.param(
            [look(0, 5000), look(1, 5000, decodable=True)], 1.0, "video", Ready(), id="video-ok"
        ),
    ],
)
def test_readiness(history: list[Observation], now: float, kind: str, expected: Decision) -> None:
    """Stable size, minimum size and a complete decode make a file ready; else wait or give up."""
    assert readiness(history, now, CONFIG, "video" if kind == "video" else "image") == expected


@pytest.mark.parametrize(
    ("history", "new", "expected"),
    [
        pytest.param([], look(0, 1), [look(0, 1)], id="first"),
        pytest.param([look(0, 1)], look(1, 2), [look(1, 2)], id="change-starts-a-run"),
        pytest.param([look(0, 1)], look(1, 1), [look(0, 1), look(1, 1)], id="same"),
        pytest.param(
            [look(0, 1), look(1, 1)], look(2, 1), [look(0, 1), look(2, 1)], id="keeps-run-start"
        ),
        pytest.param(
            [look(0, 1), look(1, 1, decodable=False)],
            look(2, 1),
            [look(0, 1), look(1, 1, decodable=False), look(2, 1)],
            id="keeps-probe",
        ),
    ],
)
def test_record_keeps_history_short(
    history: list[Observation], new: Observation, expected: list[Observation]
) -> None:
    """Only the current run's first look, its probes and the latest look are kept."""
    assert record(history, new) == expected


# --- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not a known IANA zone"),
        ({"stable_seconds": 0}, "stable_seconds must be > 0"),
        ({"stable_seconds": 10, "incomplete_timeout_seconds": 5}, "shorter than stable_seconds"),
        ({"min_image_bytes": -1}, "min_image_bytes must be >= 0"),
        ({"scan_max_age_seconds": 0}, "scan_max_age_seconds"),
    ],
)
def test_config_refuses_unusable_settings(changes: dict[str, object], message: str) -> None:
    """Unusable watch settings are refused with a message naming the setting."""
    with pytest.raises(WatchConfigError, match=message):
        WatchConfig(**changes)  # type: ignore[arg-type]


def test_config_scan_age_defaults_to_dedupe_ttl() -> None:
    """Without a scan age limit the start-up scan uses the dedupe TTL."""
    assert WatchConfig(dedupe_ttl_seconds=120.4).scan_max_age == 120.4
    assert WatchConfig(dedupe_ttl_seconds=120.4).dedupe_ttl == 120
    assert WatchConfig(scan_max_age_seconds=60).scan_max_age == 60

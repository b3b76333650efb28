"""When a camera file was captured: from its name, else its EXIF data, else its mtime.

Camera file names carry naive local times (`MDAlarm_20260101-120000.jpg`); they are read in the
configured time zone and returned aware. `capture_time_from_name` is a pure function;
`exif_capture_time` and `capture_time` read the file's header (blocking: call from a thread).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from PIL import ExifTags, Image

from streams.detectors.images import IMAGE_FORMATS

CaptureSource = Literal["filename", "exif", "mtime"]

# Years outside this range in a name are serial numbers or counters, not capture times.
_MIN_YEAR = 1990
_MAX_YEAR = 2100

# Separated: `2026-01-01_12-00-00`, `2026-01-01 12.00.00`, `2026_01_01-12_00_00`,
# `2026-01-01T12:00:00`.
_SEPARATED = re.compile(
    r"(?<!\d)(?P<y>\d{4})([-_.])(?P<mo>\d{2})\2(?P<d>\d{2})[ T_-]?"
    r"(?P<h>\d{2})([-_.:])(?P<mi>\d{2})\6(?P<s>\d{2})(?!\d)"
)
# Compact: `20260101-120000` (Foscam MDAlarm/Schedule), `20260101_120000` (Foscam alarm clips),
# `20260101120000` (Foscam/Reolink), `20260101T120000`, `20260101120000123` (Hikvision, ms).
_COMPACT = re.compile(
    r"(?<!\d)(?P<y>\d{4})(?P<mo>\d{2})(?P<d>\d{2})[T_-]?"
    r"(?P<h>\d{2})(?P<mi>\d{2})(?P<s>\d{2})(?P<ms>\d{3})?(?!\d)"
)
_PATTERNS = (_SEPARATED, _COMPACT)

_EXIF_FORMAT = "%Y:%m:%d %H:%M:%S"
_EXIF_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


def capture_time_from_name(name: str, tz: str, near: float | None = None) -> datetime | None:
    """The capture time written in a camera file name, aware in zone `tz`; None if there is none.

    The first date-and-time found wins (patterns: `20260101-120000`, `20260101_120000`,
    `20260101120000`, `20260101T120000`, `20260101120000123`, `2026-01-01_12-00-00`, …);
    impossible dates (month 13) and implausible years are skipped. A local time that the zone's
    clocks show twice (the hour repeated when summer time ends) or never (the hour skipped when it
    begins) is taken as the instant nearer to `near` (epoch seconds: the file's modification time).
    """
    zone = ZoneInfo(tz)
    for pattern in _PATTERNS:
        for match in pattern.finditer(name):
            found = _datetime_of(match, zone)
            if found is not None:
                return nearest_fold(found, near)
    return None


def nearest_fold(moment: datetime, near: float | None) -> datetime:
    """`moment` (a zone's local time); for a wall time of the repeated or skipped hour of a
    change between summer and winter time, the one of its two instants nearer to `near` (epoch
    seconds), with that instant's fixed UTC offset (so it compares and prints unambiguously)."""
    other = moment.replace(fold=1 - moment.fold)
    if other.utcoffset() == moment.utcoffset():
        return moment
    chosen = moment
    if near is not None and abs(other.timestamp() - near) < abs(moment.timestamp() - near):
        chosen = other
    offset = chosen.utcoffset()
    assert offset is not None  # a zone's local time always has one
    return chosen.astimezone(timezone(offset))


def _datetime_of(match: re.Match[str], zone: ZoneInfo) -> datetime | None:
    year = int(match["y"])
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        return None
    millis = match.groupdict().get("ms")
    try:
        return datetime(
            year,
            int(match["mo"]),
            int(match["d"]),
            int(match["h"]),
            int(match["mi"]),
            int(match["s"]),
            int(millis) * 1000 if millis else 0,
            tzinfo=zone,
        )
    except ValueError:
        return None


def parse_exif_time(
    value: str, offset: str | None, tz: str, near: float | None = None
) -> datetime | None:
    """An EXIF `YYYY:MM:DD HH:MM:SS` time, aware: with its `OffsetTimeOriginal` when given,
    else in zone `tz` (an ambiguous local time: `nearest_fold` to `near`); None when it is blank
    or malformed (cameras write `0000:00:00 00:00:00`)."""
    try:
        naive = datetime.strptime(value.strip().rstrip("\x00"), _EXIF_FORMAT)
    except ValueError:
        return None
    if not _MIN_YEAR <= naive.year <= _MAX_YEAR:
        return None
    match = _EXIF_OFFSET.match(offset.strip().rstrip("\x00")) if offset else None
    if match is None:
        return nearest_fold(naive.replace(tzinfo=ZoneInfo(tz)), near)
    sign = -1 if match.group(1) == "-" else 1
    delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    return naive.replace(tzinfo=timezone(sign * delta))


def exif_capture_time(path: Path, tz: str, near: float | None = None) -> datetime | None:
    """EXIF DateTimeOriginal of the image at `path`, or None (no EXIF, not an image, unreadable)."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as opened:
            exif = opened.getexif().get_ifd(ExifTags.IFD.Exif)
    except Exception:  # any unreadable header just means "no EXIF time"
        return None
    value = exif.get(ExifTags.Base.DateTimeOriginal)
    offset = exif.get(ExifTags.Base.OffsetTimeOriginal)
    if not isinstance(value, str):
        return None
    return parse_exif_time(value, offset if isinstance(offset, str) else None, tz, near)


def capture_time(
    path: Path, name: str, tz: str, mtime: float, *, read_exif: bool = True
) -> tuple[datetime, CaptureSource]:
    """When the file was captured and where that came from: file name, EXIF, else mtime.

    `read_exif=False` skips the EXIF step (videos). Blocking when it reads EXIF.
    """
    from_name = capture_time_from_name(name, tz, near=mtime)
    if from_name is not None:
        return from_name, "filename"
    if read_exif:
        from_exif = exif_capture_time(path, tz, near=mtime)
        if from_exif is not None:
            return from_exif, "exif"
    return datetime.fromtimestamp(mtime, tz=ZoneInfo(tz)), "mtime"

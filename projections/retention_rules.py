"""Retention rules: how long each camera keeps its rows and stream entries, and how long its media
files stay on disk by the risk level of the events they belong to. Parsing and every decision
here are pure (time is an argument); `projections.retention` does the Redis, SQL and disk work.

Why media files may go early but rows may not: the streams are the source of truth and a
stream can only be trimmed below one id (`XTRIM MINID`), a prefix of its entries. A row may be
deleted only once its entries are trimmed, or a rebuild would bring it back and `hsi replay
--verify` would differ. A low event cannot lose its rows after 7 days while a high event of the
same camera a minute later keeps its entries for a year. So rows and entries have one horizon per
camera, `days`, at least as long as the longest media rule of that camera (a file is never kept
longer than its row, which is how the API finds it); what the levels decide is when a file is
deleted from disk while its row stays. Files are not in the streams, so replay is unaffected.

A file's levels are those of the events it belongs to (through its detections): `low` …
`critical`, `unrated` for an event without a risk level (analysis pending or failed), `none`
for a file in no event. A file in several events is kept as long as its longest level. A level
without a rule keeps its files until their rows go. A file still pending detection is never
deleted by a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from projections.errors import RetentionError
from streams.names import is_camera_id

LEVELS: Final = ("none", "unrated", "low", "medium", "high", "critical")
MAX_DAYS: Final = 3650


@dataclass(frozen=True)
class CameraRetention:
    """One camera's rules: rows and entries for `days`, media of a level for `media[level]`."""

    days: int
    media: Mapping[str, int] = field(default_factory=dict)

    @property
    def horizon_days(self) -> int:
        """Rows and stream entries are kept this long: `days`, or the longest media rule."""
        return max([self.days, *self.media.values()])

    def cutoff(self, now: datetime) -> datetime:
        return cutoff_of(now, self.horizon_days)

    @property
    def shortest_days(self) -> int:
        return min([self.horizon_days, *self.media.values()])


@dataclass(frozen=True)
class RetentionRules:
    """RETENTION_DAYS, the media rules of every camera, and the cameras' own rules."""

    default_days: int
    media: Mapping[str, int] = field(default_factory=dict)
    cameras: Mapping[str, CameraRetention] = field(default_factory=dict)

    @property
    def default(self) -> CameraRetention:
        """The rules of a camera without a table of its own."""
        return CameraRetention(self.default_days, self.media)

    def for_camera(self, camera: str) -> CameraRetention:
        return self.cameras.get(camera) or self.default

    @property
    def deletes_media_by_level(self) -> bool:
        return bool(self.media) or any(c.media for c in self.cameras.values())

    def check(self, delete_media: bool) -> None:
        """Media rules delete files: refuse them while media deletion is off."""
        if self.deletes_media_by_level and not delete_media:
            raise RetentionError(
                "the retention rules delete media files by level but RETENTION_DELETE_MEDIA is "
                "false; set RETENTION_DELETE_MEDIA=true, or remove the [media] tables"
            )


def cutoff_of(now: datetime, retention_days: int) -> datetime:
    if retention_days < 1:
        raise ValueError(f"retention_days must be >= 1, got {retention_days}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now - timedelta(days=retention_days)


# --- parsing ------------------------------------------------------------------------------------


def _days(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        raise RetentionError(f"{where} must be a whole number of days from 1 to {MAX_DAYS}")
    return value


def _media(table: Any, where: str) -> dict[str, int]:
    if not isinstance(table, Mapping):
        raise RetentionError(f"{where} must be a table of level = days")
    unknown = sorted(set(table) - set(LEVELS))
    if unknown:
        raise RetentionError(
            f"{where}: unknown level {', '.join(unknown)}; the levels are {', '.join(LEVELS)}"
        )
    return {level: _days(days, f"{where}.{level}") for level, days in table.items()}


def parse_rules(document: Mapping[str, Any], default_days: int) -> RetentionRules:
    """The rules of a TOML document (see docs/operations.md, Retention), over RETENTION_DAYS."""
    _days(default_days, "RETENTION_DAYS")
    unknown = sorted(set(document) - {"media", "cameras"})
    if unknown:
        raise RetentionError(
            f"unknown table {', '.join(unknown)} in the retention rules; use [media] and "
            "[cameras.<camera id>]"
        )
    media = _media(document.get("media", {}), "media")
    cameras_table = document.get("cameras", {})
    if not isinstance(cameras_table, Mapping):
        raise RetentionError("cameras must be a table of [cameras.<camera id>]")
    cameras: dict[str, CameraRetention] = {}
    for camera, table in cameras_table.items():
        where = f"cameras.{camera}"
        if not is_camera_id(camera):
            raise RetentionError(f"{where}: {camera!r} is not a camera id (lowercase, digits, _)")
        if not isinstance(table, Mapping) or set(table) - {"days", "media"}:
            raise RetentionError(f"{where} may set only days and [{where}.media]")
        days = _days(table.get("days", default_days), f"{where}.days")
        cameras[camera] = CameraRetention(
            days, MappingProxyType({**media, **_media(table.get("media", {}), f"{where}.media")})
        )
    return RetentionRules(default_days, MappingProxyType(media), MappingProxyType(cameras))


# --- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaCandidate:
    """A media file on record: its path, when it was taken, its events' levels (empty: in no
    event) and whether detection is done with it."""

    path: str
    captured_at: datetime
    levels: frozenset[str] = frozenset()
    detected: bool = True

    @property
    def effective_levels(self) -> frozenset[str]:
        return self.levels or frozenset({"none"})


def kept_days(levels: Iterable[str], rule: CameraRetention) -> tuple[str, int]:
    """The level that keeps a file longest and for how many days (the horizon when a level has
    no rule: the file then stays with its row)."""
    return max(
        ((level, rule.media.get(level, rule.horizon_days)) for level in levels),
        key=lambda pair: (pair[1], LEVELS.index(pair[0]) if pair[0] in LEVELS else -1),
    )


def level_of(candidate: MediaCandidate, rule: CameraRetention) -> str:
    return kept_days(candidate.effective_levels, rule)[0]


def media_past_rules(
    candidates: Iterable[MediaCandidate], rule: CameraRetention, now: datetime
) -> list[tuple[MediaCandidate, str]]:
    """The files a level rule deletes at `now` (with the level that decided): older than their
    longest level's days, detection done, and a rule for every level they have."""
    chosen = []
    for candidate in candidates:
        levels = candidate.effective_levels
        if not candidate.detected or not all(level in rule.media for level in levels):
            continue
        level, days = kept_days(levels, rule)
        if candidate.captured_at < cutoff_of(now, days):
            chosen.append((candidate, level))
    return chosen

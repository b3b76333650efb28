"""A camera account's daily upload quota: files and bytes per UTC day.

The decision (`admit_upload`) and the bookkeeping (`record_bytes`) are pure functions of the
day's usage, the limits and today's date; `QuotaBook` keeps one `DayUsage` per account for a
receiver process and applies them. Counts start again at 00:00 UTC and when the receiver
restarts: the quota is a brake on a stolen password filling the disk, not an accounting.

A file counts when its `STOR` is admitted (so aborted uploads count too); its bytes count when
it has been received. The check happens before each upload, so the upload that crosses the byte
limit completes (it is at most `FTP_MAX_UPLOAD_MB`) and the next one is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Literal

__all__ = ["DayUsage", "QuotaBook", "QuotaLimits", "QuotaVerdict", "admit_upload", "record_bytes"]

Limit = Literal["files", "bytes"]


@dataclass(frozen=True)
class QuotaLimits:
    """Per account and UTC day; 0 means no limit."""

    bytes_per_day: int = 0
    files_per_day: int = 0


@dataclass(frozen=True)
class DayUsage:
    day: date
    files: int = 0
    bytes: int = 0
    warned: bool = False  # the operator was told today that this account hit its quota


@dataclass(frozen=True)
class QuotaVerdict:
    """`allowed` or the `limit` that refuses the upload; `usage` is the account's new usage;
    `warn` is true for the first refusal of the day (log it then, once)."""

    allowed: bool
    usage: DayUsage
    limit: Limit | None = None
    warn: bool = False


def _today_usage(usage: DayUsage | None, today: date) -> DayUsage:
    return usage if usage is not None and usage.day == today else DayUsage(day=today)


def admit_upload(usage: DayUsage | None, limits: QuotaLimits, today: date) -> QuotaVerdict:
    """Whether one more upload fits today's quota; an admitted upload counts as a file."""
    current = _today_usage(usage, today)
    limit: Limit | None = None
    if limits.files_per_day and current.files >= limits.files_per_day:
        limit = "files"
    elif limits.bytes_per_day and current.bytes >= limits.bytes_per_day:
        limit = "bytes"
    if limit is not None:
        return QuotaVerdict(
            allowed=False,
            usage=replace(current, warned=True),
            limit=limit,
            warn=not current.warned,
        )
    return QuotaVerdict(allowed=True, usage=replace(current, files=current.files + 1))


def record_bytes(usage: DayUsage | None, received: int, today: date) -> DayUsage:
    """`received` more bytes stored today (an upload that ends after midnight counts today)."""
    current = _today_usage(usage, today)
    return replace(current, bytes=current.bytes + max(received, 0))


def utc_day(clock: Callable[[], float]) -> date:
    return datetime.fromtimestamp(clock(), UTC).date()


class QuotaBook:
    """The day's usage of every account of one receiver; used from its IO loop thread only."""

    def __init__(self, limits: QuotaLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self._clock = clock
        self._usage: dict[str, DayUsage] = {}

    def admit(self, user: str) -> QuotaVerdict:
        verdict = admit_upload(self._usage.get(user), self.limits, utc_day(self._clock))
        self._usage[user] = verdict.usage
        return verdict

    def received(self, user: str, size: int) -> None:
        self._usage[user] = record_bytes(self._usage.get(user), size, utc_day(self._clock))

    def usage(self, user: str) -> DayUsage:
        return _today_usage(self._usage.get(user), utc_day(self._clock))

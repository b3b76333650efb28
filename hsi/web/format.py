"""Pure formatting helpers for the templates: times in the home's zone, risk levels, URLs.

Every function takes what it needs (`now`, the zone) as arguments, so tests need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from hsi.api import links
from streams.severity import RiskLevel

UNSCORED = "unscored"  # the chart/legend key of events without a risk level (pending or failed)


@dataclass(frozen=True)
class LevelStyle:
    label: str
    colour: str  # a background for white text, at least 4.5:1 contrast (WCAG AA)


LEVEL_STYLES: dict[str, LevelStyle] = {
    RiskLevel.LOW.value: LevelStyle("Low", "#2e6b30"),
    RiskLevel.MEDIUM.value: LevelStyle("Medium", "#8a5a00"),
    RiskLevel.HIGH.value: LevelStyle("High", "#b3400a"),
    RiskLevel.CRITICAL.value: LevelStyle("Critical", "#b00020"),
    UNSCORED: LevelStyle("Not scored", "#5f6368"),
}
LEVEL_ORDER: tuple[str, ...] = (*(level.value for level in RiskLevel), UNSCORED)


def level_key(risk_level: str | None) -> str:
    """The style key of an event's level: the level itself, or `unscored`."""
    return risk_level if risk_level in LEVEL_STYLES else UNSCORED


def level_text(risk_level: str | None, analysis_status: str | None = None) -> str:
    """What the badge says, so that the level never depends on colour alone."""
    if risk_level in LEVEL_STYLES:
        return LEVEL_STYLES[risk_level].label
    if analysis_status == "failed":
        return "Analysis failed"
    return "Awaiting analysis"


def parse_iso(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: str | datetime | None, zone: tzinfo, *, seconds: bool = True) -> str:
    """`2026-01-10 13:00:05 CET` in `zone`; an empty string for no time."""
    at = parse_iso(value)
    if at is None:
        return ""
    local = at.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    name = local.tzname()
    return f"{text} {name}" if name else text


def format_ago(value: str | datetime | None, now: datetime) -> str:
    """`just now`, `5 min ago`, `3 h ago`, `2 days ago`; `never` for no time."""
    at = parse_iso(value)
    if at is None:
        return "never"
    seconds = (now - at).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return "1 day ago" if days == 1 else f"{days} days ago"


def format_ms(value: float | None) -> str:
    """A duration in milliseconds, readable: `850 ms`, `2.4 s`, `3 min 5 s`."""
    if value is None:
        return "–"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    minutes, rest = divmod(round(value / 1000), 60)
    return f"{minutes} min {rest} s"


def format_seconds(value: float | None) -> str:
    """A duration in seconds, readable (see `format_ms`)."""
    return format_ms(None if value is None else value * 1000)


def format_clip_time(seconds: float) -> str:
    """A time in a video, as a player shows it: `0:02.0`, `12:05.4`, `1:00:00.0`."""
    tenths = round(seconds * 10)
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    clock = f"{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{minutes:02d}:{clock}" if hours else f"{minutes}:{clock}"


def format_count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}".replace(",", "\u202f")


def day_start(now: datetime, zone: tzinfo) -> datetime:
    """The start of `now`'s day in `zone` (midnight there), as an aware datetime."""
    local = now.astimezone(zone)
    midnight = datetime(local.year, local.month, local.day)
    return midnight.replace(tzinfo=zone)


def datetime_local_value(value: datetime | None, zone: tzinfo) -> str:
    """The value of an `<input type="datetime-local">` showing `value` in `zone`."""
    if value is None:
        return ""
    return value.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def hour_label(hour: datetime, zone: tzinfo, previous: datetime | None) -> str:
    """An x-axis label: `14:00`, with the date when the day changes (or on the first label)."""
    local = hour.astimezone(zone)
    if previous is None or previous.astimezone(zone).date() != local.date():
        return local.strftime("%a %d %H:%M")
    return local.strftime("%H:%M")


# --- the dashboard's own URLs (images go through the cookie-checked /ui routes) ----------------

UI = "/ui"


def media_url(camera_id: str, path: str | None) -> str | None:
    """The dashboard URL of an original camera file (`path` relative to the camera root)."""
    return links.media_url(camera_id, path, root=UI)


def thumbnail_url(detection_id: object) -> str:
    return f"{UI}/thumbnails/{detection_id}"


def fragment_url(event_id: object) -> str:
    return f"{UI}/fragments/events/{event_id}"


def event_page_url(event_id: object) -> str:
    return f"/events/{event_id}"


def shorten(text: str | None, limit: int = 160) -> str:
    """At most `limit` characters, cut at a word with an ellipsis."""
    if not text:
        return ""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "…"


def window_length(start: str | None, end: str | None) -> str:
    """How long an event's window lasted: `42 s`, `3 min`."""
    a, b = parse_iso(start), parse_iso(end)
    if a is None or b is None:
        return ""
    span = max(timedelta(0), b - a).total_seconds()
    return f"{span:.0f} s" if span < 120 else f"{span / 60:.0f} min"

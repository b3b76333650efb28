"""Formatting helpers of the pages: times in the home's zone, durations, levels and URLs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hsi.web import format as fmt
from hsi.web.render import STATIC, zone_name

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "zone", "text"),
    [
        ("2026-01-10T12:00:00Z", UTC, "2026-01-10 12:00:00 UTC"),
        ("2026-01-10T12:00:00Z", BERLIN, "2026-01-10 13:00:00 CET"),
        ("2026-07-10T12:00:00.5Z", BERLIN, "2026-07-10 14:00:00 CEST"),
        (datetime(2026, 1, 10, 23, 30, tzinfo=UTC), BERLIN, "2026-01-11 00:30:00 CET"),
        (None, UTC, ""),
    ],
)
def test_times_are_shown_in_the_homes_zone(
    value: str | datetime | None, zone: tzinfo, text: str
) -> None:
    """A UTC timestamp is written in the configured zone, with the zone's abbreviation."""
    assert fmt.format_time(value, zone) == text


@pytest.mark.parametrize(
    ("seconds_ago", "text"),
    [
        (None, "never"),
        (-5, "in the future"),
        (10, "just now"),
        (300, "5 min ago"),
        (3 * 3600 + 5, "3 h ago"),
        (86400 + 5, "1 day ago"),
        (3 * 86400, "3 days ago"),
    ],
)
def test_how_long_ago(seconds_ago: int | None, text: str) -> None:
    """Last activity reads as a rough age relative to `now`."""
    value = None if seconds_ago is None else NOW - timedelta(seconds=seconds_ago)
    assert fmt.format_ago(value, NOW) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "–"), (0.4, "0 ms"), (850, "850 ms"), (2400, "2.4 s"), (185_000, "3 min 5 s")],
)
def test_durations_are_readable(ms: float | None, text: str) -> None:
    """Milliseconds below a second, seconds below a minute, then minutes and seconds."""
    assert fmt.format_ms(ms) == text
    assert fmt.format_seconds(None if ms is None else ms / 1000) == text


@pytest.mark.parametrize(
    ("now", "zone", "start"),
    [
        (NOW, UTC, datetime(2026, 1, 10, tzinfo=UTC)),
        (NOW, BERLIN, datetime(2026, 1, 9, 23, 0, tzinfo=UTC)),
        # the night Berlin moves to summer time: midnight was still CET (UTC+1)
        (
            datetime(2026, 3, 29, 12, 0, tzinfo=UTC),
            BERLIN,
            datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
        ),
        # just after midnight local time, which is still the previous day in UTC
        (datetime(2026, 1, 9, 23, 30, tzinfo=UTC), BERLIN, datetime(2026, 1, 9, 23, 0, tzinfo=UTC)),
    ],
)
def test_today_starts_at_the_homes_midnight(now: datetime, zone: tzinfo, start: datetime) -> None:
    """ "Files today" count from midnight in the configured zone."""
    assert fmt.day_start(now, zone) == start


@pytest.mark.parametrize(
    ("level", "status", "text", "key"),
    [
        ("low", "completed", "Low", "low"),
        ("critical", "completed", "Critical", "critical"),
        (None, "pending", "Awaiting analysis", "unscored"),
        (None, "failed", "Analysis failed", "unscored"),
        ("bogus", None, "Awaiting analysis", "unscored"),
    ],
)
def test_levels_are_named_in_words(
    level: str | None, status: str | None, text: str, key: str
) -> None:
    """The badge names the level (colour is never the only cue); unknown means unscored."""
    assert fmt.level_text(level, status) == text
    assert fmt.level_key(level) == key


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("Front Door/snap/a.jpg", "/ui/media/front_door/Front%20Door/snap/a.jpg"),
        ("Front Door/a#1?.jpg", "/ui/media/front_door/Front%20Door/a%231%3F.jpg"),
        (None, None),
        ("", None),
    ],
)
def test_media_urls_quote_the_path(path: str | None, url: str | None) -> None:
    """Original files go through the dashboard's cookie-checked route, path quoted."""
    assert fmt.media_url("front_door", path) == url


def test_hour_labels_name_the_day_when_it_changes() -> None:
    """An axis label carries the date on the first label and at each new day."""
    first = datetime(2026, 1, 10, 21, 0, tzinfo=UTC)
    assert fmt.hour_label(first, UTC, None) == "Sat 10 21:00"
    assert fmt.hour_label(first + timedelta(hours=2), UTC, first) == "23:00"
    assert fmt.hour_label(first + timedelta(hours=3), UTC, first) == "Sun 11 00:00"


@pytest.mark.parametrize(
    ("text", "limit", "short"),
    [(None, 10, ""), ("short", 10, "short"), ("a person at the door", 12, "a person at…")],
)
def test_long_summaries_are_cut_at_a_word(text: str | None, limit: int, short: str) -> None:
    """Cards show at most `limit` characters, cut at a word."""
    assert fmt.shorten(text, limit) == short


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        ("2026-01-10T12:00:00Z", "2026-01-10T12:00:42Z", "42 s"),
        ("2026-01-10T12:00:00Z", "2026-01-10T12:05:00Z", "5 min"),
        (None, "2026-01-10T12:05:00Z", ""),
    ],
)
def test_window_length(start: str | None, end: str | None, text: str) -> None:
    """How long an event's window lasted."""
    assert fmt.window_length(start, end) == text


def test_zone_names_prefer_the_iana_name() -> None:
    """The footer names the zone: its IANA key when it has one, else its abbreviation."""
    assert zone_name(BERLIN, NOW) == "Europe/Berlin"
    assert zone_name(UTC, NOW) == "UTC"


def _luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


@pytest.mark.parametrize("key", fmt.LEVEL_ORDER)
def test_level_colours_keep_white_text_readable(key: str) -> None:
    """Every level colour has at least 4.5:1 contrast with the badge's white text (WCAG AA)."""
    ratio = 1.05 / (_luminance(fmt.LEVEL_STYLES[key].colour) + 0.05)
    assert ratio >= 4.5, f"{key}: {ratio:.2f}"


def test_the_stylesheet_uses_the_same_level_colours() -> None:
    """app.css and the SVG charts colour each level the same (one palette, checked here)."""
    css = (Path(STATIC) / "app.css").read_text()
    found = dict(re.findall(r"--level-(\w+): (#[0-9a-f]{6});", css))
    assert found == {key: style.colour for key, style in fmt.LEVEL_STYLES.items()}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0:00.0"), (2.0, "0:02.0"), (0.033, "0:00.0"), (65.44, "1:05.4"), (3600.0, "1:00:00.0")],
)
def test_clip_times_read_as_a_player_shows_them(seconds: float, text: str) -> None:
    """A time in a video: minutes, seconds and tenths; hours once there are any."""
    assert fmt.format_clip_time(seconds) == text

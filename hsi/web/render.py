"""Server-side rendering: the Jinja2 environment (autoescaped, strict) and HTML responses with
the dashboard's security headers."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from hsi.web import format as fmt
from hsi.web.config import WebConfig

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Pages show private pictures: never cached, never framed; scripts and styles from here only.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

NAV: tuple[tuple[str, str], ...] = (
    ("/", "Live"),
    ("/events", "Events"),
    ("/cameras", "Cameras"),
    ("/charts", "Charts"),
    ("/reanalyses", "Re-analysis"),
    ("/system", "System"),
)


def build_environment(web: WebConfig) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    zone = web.timezone
    env.filters.update(
        {
            "time": lambda value: fmt.format_time(value, zone),
            "minute": lambda value: fmt.format_time(value, zone, seconds=False),
            "ms": fmt.format_ms,
            "seconds": fmt.format_seconds,
            "clip_time": fmt.format_clip_time,
            "count": fmt.format_count,
            "level_key": fmt.level_key,
            "shorten": fmt.shorten,
            "media_url": lambda path, camera_id: fmt.media_url(camera_id, path),
            "thumbnail_url": fmt.thumbnail_url,
            "event_url": fmt.event_page_url,
            "fragment_url": fmt.fragment_url,
        }
    )
    env.globals.update(
        {
            "nav": NAV,
            "level_styles": fmt.LEVEL_STYLES,
            "level_order": fmt.LEVEL_ORDER,
            "level_text": fmt.level_text,
            "window_length": fmt.window_length,
        }
    )
    return env


def zone_name(zone: tzinfo, now: datetime) -> str:
    """`Europe/Berlin` for a named zone, else its abbreviation now (`UTC`, `CET`)."""
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else (now.astimezone(zone).tzname() or "UTC")


class Renderer:
    def __init__(self, web: WebConfig, *, keys_enabled: bool) -> None:
        self.env = build_environment(web)
        self.web = web
        self.keys_enabled = keys_enabled

    def html(self, name: str, context: dict[str, Any]) -> str:
        return self.env.get_template(name).render(context)

    def page(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> HTMLResponse:
        now = datetime.now(UTC)
        full = {
            "path": request.url.path,
            "keys_enabled": self.keys_enabled,
            "now": now,
            "ago": lambda value: fmt.format_ago(value, now),
            "zone_name": zone_name(self.web.timezone, now),
            **context,
        }
        return HTMLResponse(
            self.html(name, full), status_code=status_code, headers=SECURITY_HEADERS
        )

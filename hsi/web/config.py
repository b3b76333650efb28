"""The dashboard's frozen configuration, mapped from `Settings` by
`hsi.settings.components.web_config()`.

The API's own `APIConfig` (keys, severity, camera root) is passed next to it; this holds only
what the dashboard adds: the zone it shows times in, page sizes, and the AI backends the
System page probes. Tests build `WebConfig` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo

from streams.zones import NO_ZONES, ZoneSet


@dataclass(frozen=True)
class AIBackend:
    """One AI backend as the System page shows it.

    `probe_url` is fetched (any HTTP answer counts as reachable, as in `hsi doctor`); without
    one the backend runs in-process and is ready when `module` (if any) can be imported.
    """

    role: str  # "detector" | "analyzer"
    description: str  # never holds a secret: URLs are shown with their password masked
    probe_url: str | None = None
    module: str | None = None


@dataclass(frozen=True)
class WebConfig:
    timezone: tzinfo = UTC  # times are shown and "today" is counted in this zone
    page_size: int = 25  # events per page of /events
    live_count: int = 20  # events the live page starts with and keeps
    backends: tuple[AIBackend, ...] = ()
    probe_timeout_seconds: float = 2.0
    zones: ZoneSet = NO_ZONES  # drawn faintly over the event pictures

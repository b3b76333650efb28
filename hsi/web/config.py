"""The dashboard's frozen configuration, mapped from `Settings` by `WebConfig.from_settings()`.

The API's own `APIConfig` (keys, severity, camera root) is passed next to it; this holds only
what the dashboard adds: the zone it shows times in, page sizes, and the AI backends the
System page probes. Tests build `WebConfig` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from hsi.settings import components
from hsi.settings.model import AnalyzerBackend, DetectorBackend, mask_url_password

if TYPE_CHECKING:
    from hsi.settings.model import Settings


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

    @classmethod
    def from_settings(cls, settings: Settings) -> WebConfig:
        zone = components.local_zone(settings)
        return cls(
            timezone=ZoneInfo(zone) if isinstance(zone, str) else zone,
            backends=ai_backends(settings),
        )


def ai_backends(settings: Settings) -> tuple[AIBackend, ...]:
    if settings.detector_backend is DetectorBackend.EMBEDDED:
        detector = AIBackend(
            "detector", "embedded CPU detector (NanoDet-m, onnxruntime)", module="onnxruntime"
        )
    else:
        detector = AIBackend(
            "detector",
            f"RT-DETR at {mask_url_password(settings.rtdetr_url)}",
            probe_url=settings.rtdetr_url,
        )
    if settings.analyzer_backend is AnalyzerBackend.RULES:
        analyzer = AIBackend("analyzer", "rule-based scorer (no LLM configured)")
    else:
        analyzer = AIBackend(
            "analyzer",
            f"LLM {settings.llm_model} at {mask_url_password(settings.llm_url)}",
            probe_url=settings.llm_url.rstrip("/") + "/v1/models",
        )
    return detector, analyzer

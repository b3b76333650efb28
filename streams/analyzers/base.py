"""What every analyzer receives and returns, the errors it raises, and its protocol.

An analyzer turns one closed batch of a camera (`BatchSummary`) into a risk assessment
(`Analysis`: score 0–100, level, summary, reasoning). Datetimes are timezone-aware; naive ones are
taken as UTC. `BatchSummary.timezone` is the zone in which "night" and the times in texts are
meant (the installation's local zone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.severity import RiskLevel


class AnalyzerError(Exception):
    """Base error of `streams.analyzers`; the message says what happened, why, and the fix."""


class AnalyzerUnavailableError(AnalyzerError):
    """The analyzer cannot answer now: unreachable, timing out, 5xx after the retries, circuit
    open. Transient: the stage may retry later or fall back to the rules analyzer."""


class AnalyzerResponseError(AnalyzerError):
    """The model answered, but with nothing usable (no JSON object with a valid `risk_score`).

    Retrying the same prompt rarely helps; the stage falls back to the rules analyzer.
    """


class AnalyzerRejectedError(AnalyzerError):
    """The server refused the request (4xx: wrong API key, unknown model, bad request).

    Permanent until the configuration changes; retrying does not help.
    """


class AnalyzerConfigError(AnalyzerError, ValueError):
    """The analyzer settings cannot be used."""


@dataclass(frozen=True, slots=True)
class DetectionLine:
    """One detected object of the batch."""

    label: str
    confidence: float
    captured_at: datetime
    file_name: str


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """A closed batch, as the analyzers see it."""

    camera: str
    window_start: datetime
    window_end: datetime
    detections: tuple[DetectionLine, ...]
    timezone: str | tzinfo = "UTC"
    camera_name: str | None = None  # what people call it: its folder's name ("Front Door")

    @property
    def display_name(self) -> str:
        """The camera as people read it: its folder's name, else its id."""
        return self.camera_name or self.camera

    def __post_init__(self) -> None:
        if as_utc(self.window_end) < as_utc(self.window_start):
            raise ValueError(
                f"window_end {self.window_end.isoformat()} is before "
                f"window_start {self.window_start.isoformat()}"
            )

    def zone(self) -> tzinfo:
        """The batch's local zone; an unknown zone name raises AnalyzerConfigError."""
        return resolve_zone(self.timezone)

    def local(self, moment: datetime) -> datetime:
        """`moment` in the batch's local zone (naive moments are taken as UTC)."""
        return as_utc(moment).astimezone(self.zone())


@dataclass(frozen=True, slots=True)
class Analysis:
    """The assessment of one batch. `model` and `prompt_hash` are None for non-LLM analyzers."""

    risk_score: int
    risk_level: RiskLevel
    summary: str
    reasoning: str
    analyzer: str
    model: str | None
    prompt_hash: str | None
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Analyzer(Protocol):
    """A batch scorer; `analyze` never blocks the event loop."""

    name: str

    async def analyze(self, batch: BatchSummary) -> Analysis:
        """Score `batch`.

        Raises `AnalyzerUnavailableError` (transient), `AnalyzerResponseError` (unusable answer)
        or `AnalyzerRejectedError` (configuration), all `AnalyzerError`.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the analyzer cannot be used afterwards."""
        ...


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware datetime; a naive one is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def resolve_zone(zone: str | tzinfo) -> tzinfo:
    """A tzinfo from an IANA name ("Europe/Berlin") or a tzinfo; unknown names raise."""
    if not isinstance(zone, str):
        return zone
    if zone.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise AnalyzerConfigError(
            f"unknown time zone {zone!r}; use an IANA name such as 'Europe/Berlin'"
        ) from exc

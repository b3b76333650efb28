"""Batch analyzers: a closed batch of detections in, a risk assessment out.

`build_analyzer("rules")` needs nothing; `build_analyzer("llm", llm=LLMConfig(...))` talks to an
OpenAI-compatible server. Both share `streams.severity` for the score → level mapping.
"""

from __future__ import annotations

from streams.analyzers.base import (
    Analysis,
    Analyzer,
    AnalyzerConfigError,
    AnalyzerError,
    AnalyzerRejectedError,
    AnalyzerResponseError,
    AnalyzerUnavailableError,
    BatchSummary,
    DetectionLine,
)
from streams.analyzers.llm import LLMAnalyzer, LLMConfig
from streams.analyzers.reply import ParsedRisk, parse_llm_reply
from streams.analyzers.rules import RulesAnalyzer, score_batch
from streams.severity import DEFAULT_THRESHOLDS, SeverityThresholds

BACKENDS: tuple[str, ...] = ("rules", "llm")

__all__ = [
    "BACKENDS",
    "Analysis",
    "Analyzer",
    "AnalyzerConfigError",
    "AnalyzerError",
    "AnalyzerRejectedError",
    "AnalyzerResponseError",
    "AnalyzerUnavailableError",
    "BatchSummary",
    "DetectionLine",
    "LLMAnalyzer",
    "LLMConfig",
    "ParsedRisk",
    "RulesAnalyzer",
    "build_analyzer",
    "parse_llm_reply",
    "score_batch",
]


def build_analyzer(
    backend: str,
    *,
    thresholds: SeverityThresholds = DEFAULT_THRESHOLDS,
    llm: LLMConfig | None = None,
) -> Analyzer:
    """The analyzer for `backend` ("rules" or "llm"; a StrEnum member works too).

    "llm" without `llm` uses `LLMConfig()`'s defaults. Nothing connects until the first
    `analyze`. An unknown backend raises AnalyzerConfigError.
    """
    name = str(backend).strip().lower()
    if name == "rules":
        return RulesAnalyzer(thresholds)
    if name == "llm":
        return LLMAnalyzer(llm if llm is not None else LLMConfig(), thresholds)
    raise AnalyzerConfigError(f"unknown analyzer backend {backend!r}; use one of {BACKENDS}")

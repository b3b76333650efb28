"""The model's reply: the assistant's text in a chat-completion answer, and the risk assessment
in that text (`parse_llm_reply`, pure). The LLM analyzer (`streams.analyzers.llm`) reads its
answers with these."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from streams.analyzers.base import AnalyzerResponseError
from streams.severity import (
    DEFAULT_THRESHOLDS,
    RiskLevel,
    SeverityThresholds,
    clamp_score,
    risk_level,
)

_EXCERPT_LIMIT = 300

_THINK_TAGS = "think|thinking|reasoning"
_THINK_BLOCK = re.compile(rf"<({_THINK_TAGS})>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(rf"</(?:{_THINK_TAGS})\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(rf"<(?:{_THINK_TAGS})>", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*100)?\s*%?\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class ParsedRisk:
    """The assessment found in a model reply; `model_level` is what the model said, if any."""

    risk_score: int
    risk_level: RiskLevel
    summary: str
    reasoning: str
    model_level: str | None = None


def strip_thinking(text: str) -> str:
    """`text` without its thinking.

    Removes every `<think>…</think>` block (also `<thinking>`, `<reasoning>`); a closing tag
    without an opening one means the reply started inside a think block (chat templates often
    put `<think>` in the prompt), so everything up to it goes; an opening tag that is never
    closed means the model stopped while thinking, so everything from it goes.
    """
    text = _THINK_BLOCK.sub(" ", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text


SUMMARY_LIMIT = 300  # characters kept of a model's summary and reasoning
REASONING_LIMIT = 2000


def parse_llm_reply(text: str, thresholds: SeverityThresholds = DEFAULT_THRESHOLDS) -> ParsedRisk:
    """The risk assessment in a model's reply, or AnalyzerResponseError.

    1. Thinking is dropped (`strip_thinking`).
    2. Prose and code fences are ignored: from each `{`, in order, `json.JSONDecoder.raw_decode`
       tries to read an object; nested objects are found too.
    3. The first object that has a usable `risk_score` (a finite number, or a string like "72",
       "72/100", "72%") and a summary wins. Objects with an unusable score (a template echo
       such as "<0-100>", NaN, true) are skipped.
    4. The score is rounded and clamped to 0–100. The level is ALWAYS derived from the score with
       the operator's thresholds: a model's own `risk_level` follows the scale it imagined, and
       the score is the one number everything else (alerts, filters) uses. The model's level is
       kept in `model_level` for diagnostics.
    5. `summary` is required; when missing or empty, the first sentence of `reasoning` is used.
    """
    visible = strip_thinking(text)
    decoder = json.JSONDecoder()
    seen_score = False
    position = visible.find("{")
    while position != -1:
        try:
            candidate, _ = decoder.raw_decode(visible, position)
        except json.JSONDecodeError:
            candidate = None
        except RecursionError:  # nested deeper than any assessment: no answer, and no retrying
            raise AnalyzerResponseError(  # from every inner brace (quadratic CPU)
                f"the model's reply nests JSON too deeply to be an assessment: {excerpt(text)}"
            ) from None
        if isinstance(candidate, dict) and "risk_score" in candidate:
            seen_score = True
            parsed = _parsed(candidate, thresholds)
            if parsed is not None:
                return parsed
        position = visible.find("{", position + 1)
    if seen_score:
        reason = "no JSON object with a usable risk_score and summary"
    elif _THINK_OPEN.search(text) and not _THINK_CLOSE.search(text):
        reason = "the reply ends inside a <think> block (max_tokens too small for this model?)"
    else:
        reason = "no JSON object with a risk_score"
    raise AnalyzerResponseError(f"{reason} in the model's reply: {excerpt(text)}")


def _parsed(candidate: dict[str, Any], thresholds: SeverityThresholds) -> ParsedRisk | None:
    raw = _number(candidate["risk_score"])
    if raw is None:
        return None
    reasoning = _text(candidate.get("reasoning"))[:REASONING_LIMIT]
    summary = (_text(candidate.get("summary")) or _first_sentence(reasoning))[:SUMMARY_LIMIT]
    if not summary:
        return None
    score = clamp_score(raw)
    level = candidate.get("risk_level")
    return ParsedRisk(
        risk_score=score,
        risk_level=risk_level(score, thresholds),
        summary=summary,
        reasoning=reasoning,
        model_level=level.strip().lower() if isinstance(level, str) else None,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(max(-1, min(101, value)))  # huge ints would overflow float()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        match = _NUMBER.match(value)
        return float(match.group(1)) if match else None
    return None


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip() if text else ""


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty)"
    return repr(flat if len(flat) <= _EXCERPT_LIMIT else flat[: _EXCERPT_LIMIT - 1] + "…")


def message_text(data: object) -> tuple[str, str | None]:
    """The assistant's text and finish_reason from a chat-completion response body."""
    if not isinstance(data, dict):
        raise AnalyzerResponseError(f"the response is not a JSON object: {excerpt(str(data))}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise AnalyzerResponseError(f"the response has no choices: {excerpt(json.dumps(data))}")
    choice = choices[0]
    finish = choice.get("finish_reason")
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    text = content if isinstance(content, str) else ""
    return text, finish if isinstance(finish, str) else None


def token_count(usage: object, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None

"""The LLM analyzer: an OpenAI-compatible chat completion scores the batch.

Works with llama.cpp's server, vLLM, Ollama and anything else that serves
`POST {base_url}/v1/chat/completions` (a trailing `/v1` in `base_url` is accepted too).

Request
    Two messages: a system message with the task and the answer format, and a user message with
    the camera, the local time window, the numbered detections and the severity scale built from
    the thresholds. Camera and file names are cleaned of control characters and shortened, since
    whoever names a camera folder writes into the prompt. With `json_schema` on, the body carries
    `response_format: {"type": "json_schema", "json_schema": {"name": "risk_assessment",
    "schema": ...}}`. A server that answers 400 to that is asked once more without it; when that
    works, the analyzer remembers that this server takes no schema and stops sending it.

Transport
    httpx with separate connect and read timeouts. Connect errors, other transport errors,
    timeouts, 5xx and 408/429 are retried with capped exponential backoff
    (`streams.resilience.retry_call`, `max_retries` retries); if they persist the result is
    `AnalyzerUnavailableError` and one failure for the circuit breaker, which after
    `circuit_failure_threshold` consecutive failed calls refuses calls for `circuit_reset_seconds`
    (also `AnalyzerUnavailableError`). Other 4xx raise `AnalyzerRejectedError` and, like any
    answer, count as the server being alive. An answer longer than `max_response_bytes` is not
    read past the limit: `AnalyzerResponseError`.

Reply
    `parse_llm_reply` (pure) finds the assessment in the model's text; see its docstring.
    The `Analysis` records the model (as the server names it), `prompt_hash` (sha256 of the
    messages as canonical JSON: same prompt, same hash), the token counts from `usage` when the
    server sends them, and the latency of the whole call including retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from streams.analyzers.base import (
    Analysis,
    AnalyzerConfigError,
    AnalyzerRejectedError,
    AnalyzerResponseError,
    AnalyzerUnavailableError,
    BatchSummary,
)
from streams.analyzers.rules import is_night
from streams.resilience import (
    DEFAULT_MAX_RESPONSE_BYTES,
    CircuitBreaker,
    ResponseTooLargeError,
    post_capped,
    retry_call,
)
from streams.severity import (
    DEFAULT_THRESHOLDS,
    RiskLevel,
    SeverityThresholds,
    clamp_score,
    risk_level,
)

logger = logging.getLogger(__name__)

ANALYZER_NAME = "llm"
RETRYABLE_STATUS = frozenset({408, 429})  # besides every 5xx
_NAME_LIMIT = 80
_EXCERPT_LIMIT = 300

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "risk_score": {"type": "integer", "minimum": 0, "maximum": 100},
        "risk_level": {"type": "string", "enum": [level.value for level in RiskLevel]},
        "summary": {"type": "string"},
        "reasoning": {"type": "string"},
    },
    "required": ["risk_score", "risk_level", "summary", "reasoning"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "risk_assessment", "schema": RESPONSE_SCHEMA},
}

SYSTEM_PROMPT = """\
You are the risk analyst of a home security system. An object detector looked at the images \
one camera took during a short time window; you get what it found. Judge how likely the \
activity is a threat to the home (intrusion, burglary, theft, vandalism). People at night, \
several people, or people lingering raise the risk; animals, and passing vehicles by day, are \
usually harmless. Detector confidences below 0.6 are often wrong.

Answer with exactly one JSON object and nothing else:
{"risk_score": <integer 0-100>, "risk_level": "<low|medium|high|critical>", \
"summary": "<one sentence for the home owner>", "reasoning": "<two or three sentences>"}"""


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """How to reach the model and how hard to try. Times in seconds."""

    base_url: str = "http://127.0.0.1:8091"
    model: str = "nemotron"
    api_key: str | None = field(default=None, repr=False)
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0
    max_tokens: int = 1024
    temperature: float = 0.1
    json_schema: bool = True
    max_retries: int = 3
    retry_backoff_seconds: float = 0.5
    retry_backoff_cap_seconds: float = 10.0
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 30.0
    max_prompt_detections: int = 100
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model.strip():
            problems.append("model must not be empty")
        if self.connect_timeout_seconds <= 0 or self.read_timeout_seconds <= 0:
            problems.append("timeouts must be > 0")
        if self.max_tokens < 16:
            problems.append(f"max_tokens must be >= 16, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append(f"temperature must be between 0 and 2, got {self.temperature}")
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {self.max_retries}")
        if self.retry_backoff_seconds < 0 or self.retry_backoff_cap_seconds < 0:
            problems.append("retry backoff must be >= 0")
        if self.circuit_failure_threshold < 1 or self.circuit_reset_seconds <= 0:
            problems.append("circuit_failure_threshold must be >= 1, circuit_reset_seconds > 0")
        if self.max_prompt_detections < 1:
            problems.append("max_prompt_detections must be >= 1")
        if self.max_response_bytes < 1:
            problems.append(f"max_response_bytes must be >= 1, got {self.max_response_bytes}")
        if problems:
            raise AnalyzerConfigError("invalid LLM analyzer settings: " + "; ".join(problems))

    @property
    def completions_url(self) -> str:
        base = self.base_url.rstrip("/").removesuffix("/v1")
        return f"{base}/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class ParsedRisk:
    """The assessment found in a model reply; `model_level` is what the model said, if any."""

    risk_score: int
    risk_level: RiskLevel
    summary: str
    reasoning: str
    model_level: str | None = None


# --- prompt -------------------------------------------------------------------------------------


def clean_text(text: str, limit: int = _NAME_LIMIT) -> str:
    """`text` on one line: control characters become spaces, runs of spaces one, at most
    `limit` characters (an ellipsis marks a cut)."""
    spaced = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    single = " ".join(spaced.split())
    return single if len(single) <= limit else single[: limit - 1] + "…"


def build_messages(
    batch: BatchSummary,
    thresholds: SeverityThresholds = DEFAULT_THRESHOLDS,
    max_detections: int = 100,
) -> list[dict[str, str]]:
    """The chat messages for `batch` (pure: same batch, same messages, same hash)."""
    start = batch.local(batch.window_start)
    end = batch.local(batch.window_end)
    zone = batch.timezone if isinstance(batch.timezone, str) else (start.tzname() or "local")
    moments = [line.captured_at for line in batch.detections] or [batch.window_start]
    night = any(is_night(batch.local(moment)) for moment in moments)
    lines = [
        f"Camera: {clean_text(batch.camera)}",
        f"Time window: {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} "
        f"(local time, {clean_text(zone)}; {'night' if night else 'day'})",
    ]
    if batch.detections:
        lines.append("Detections (local time, object, confidence, file):")
        shown = sorted(batch.detections, key=lambda d: (d.captured_at, d.file_name))
        for number, line in enumerate(shown[:max_detections], start=1):
            lines.append(
                f"{number}. {batch.local(line.captured_at):%H:%M:%S} "
                f"{clean_text(line.label, 40)} {line.confidence:.2f} {clean_text(line.file_name)}"
            )
        if len(shown) > max_detections:
            lines.append(f"… and {len(shown) - max_detections} more detections not listed.")
    else:
        lines.append("Detections: none.")
    lines.append("Severity scale for risk_score:")
    lines.extend(f"- {level}: {low}-{high}" for level, low, high in thresholds.ranges())
    lines.append("Reply with the JSON object only.")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]


def prompt_hash(messages: list[dict[str, str]]) -> str:
    """sha256 (hex) of the messages as canonical JSON."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_request(
    config: LLMConfig, messages: list[dict[str, str]], with_schema: bool
) -> dict[str, Any]:
    """The chat-completion request body."""
    body: dict[str, Any] = {
        "model": config.model,
        "messages": messages,
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "stream": False,
    }
    if with_schema:
        body["response_format"] = RESPONSE_FORMAT
    return body


# --- reply --------------------------------------------------------------------------------------

_THINK_TAGS = "think|thinking|reasoning"
_THINK_BLOCK = re.compile(rf"<({_THINK_TAGS})>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(rf"</(?:{_THINK_TAGS})\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(rf"<(?:{_THINK_TAGS})>", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*100)?\s*%?\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


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
    raise AnalyzerResponseError(f"{reason} in the model's reply: {_excerpt(text)}")


def _parsed(candidate: dict[str, Any], thresholds: SeverityThresholds) -> ParsedRisk | None:
    raw = _number(candidate["risk_score"])
    if raw is None:
        return None
    reasoning = _text(candidate.get("reasoning"))
    summary = _text(candidate.get("summary")) or _first_sentence(reasoning)
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


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty)"
    return repr(flat if len(flat) <= _EXCERPT_LIMIT else flat[: _EXCERPT_LIMIT - 1] + "…")


def _message_text(data: object) -> tuple[str, str | None]:
    """The assistant's text and finish_reason from a chat-completion response body."""
    if not isinstance(data, dict):
        raise AnalyzerResponseError(f"the response is not a JSON object: {_excerpt(str(data))}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise AnalyzerResponseError(f"the response has no choices: {_excerpt(json.dumps(data))}")
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


def _token_count(usage: object, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- analyzer -----------------------------------------------------------------------------------


class _RetryableStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, httpx.TransportError | _RetryableStatusError)


class LLMAnalyzer:
    """Scores batches with an OpenAI-compatible chat completion (see the module docstring).

    One instance talks to one server; it is not thread-safe (use it from one event loop).
    `clock` (monotonic seconds) and `sleep` are injectable for the circuit breaker and backoff.
    """

    name: str = ANALYZER_NAME

    def __init__(
        self,
        config: LLMConfig,
        thresholds: SeverityThresholds = DEFAULT_THRESHOLDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.thresholds = thresholds
        self.breaker = CircuitBreaker(
            config.circuit_failure_threshold, config.circuit_reset_seconds
        )
        self._clock = clock
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._schema_supported = True

    @property
    def sends_schema(self) -> bool:
        """Whether the next request carries `response_format` (False once the server refused)."""
        return self.config.json_schema and self._schema_supported

    async def analyze(self, batch: BatchSummary) -> Analysis:
        started = time.perf_counter()
        messages = build_messages(batch, self.thresholds, self.config.max_prompt_detections)
        response = await self._complete(messages)
        try:
            data = response.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
            raise AnalyzerResponseError(
                f"{self.config.completions_url} answered {response.status_code} with a body that "
                f"is not JSON: {_excerpt(response.text)}"
            ) from exc
        text, finish = _message_text(data)
        try:
            parsed = parse_llm_reply(text, self.thresholds)
        except AnalyzerResponseError as exc:
            if finish == "length":
                raise AnalyzerResponseError(
                    f"{exc} (finish_reason=length: the answer was cut at max_tokens="
                    f"{self.config.max_tokens}; raise it)"
                ) from None
            raise
        usage = data.get("usage")
        model = data.get("model")
        return Analysis(
            risk_score=parsed.risk_score,
            risk_level=parsed.risk_level,
            summary=parsed.summary,
            reasoning=parsed.reasoning,
            analyzer=self.name,
            model=model if isinstance(model, str) and model else self.config.model,
            prompt_hash=prompt_hash(messages),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            prompt_tokens=_token_count(usage, "prompt_tokens"),
            completion_tokens=_token_count(usage, "completion_tokens"),
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _complete(self, messages: list[dict[str, str]]) -> httpx.Response:
        with_schema = self.sends_schema
        response = await self._send(build_request(self.config, messages, with_schema))
        if response.status_code == 400 and with_schema:
            refused = _excerpt(response.text)
            response = await self._send(build_request(self.config, messages, False))
            if response.status_code < 400:
                self._schema_supported = False
                logger.warning(
                    "%s refused response_format (400: %s); asking without a JSON schema from now "
                    "on",
                    self.config.completions_url,
                    refused,
                )
        if response.status_code >= 400:
            raise AnalyzerRejectedError(
                f"{self.config.completions_url} refused the request with "
                f"{response.status_code}: {_excerpt(response.text)}; check LLM_MODEL, "
                "LLM_API_KEY and LLM_URL"
            )
        return response

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        """POST `body` with retries under the circuit breaker; the response is < 500."""
        url = self.config.completions_url
        if not self.breaker.allow(self._clock()):
            raise AnalyzerUnavailableError(
                f"circuit open for {url} after {self.breaker.consecutive_failures} failed calls; "
                f"next try in {self.breaker.retry_after(self._clock()):.0f}s"
            )
        client = self._http()
        attempts = self.config.max_retries + 1

        async def attempt() -> httpx.Response:
            response = await post_capped(
                client, url, max_bytes=self.config.max_response_bytes, json=body
            )
            if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
                raise _RetryableStatusError(response)
            return response

        try:
            response = await retry_call(
                attempt,
                attempts=attempts,
                base=self.config.retry_backoff_seconds,
                cap=self.config.retry_backoff_cap_seconds,
                retry_on=_retryable,
                sleep=self._sleep,
            )
        except ResponseTooLargeError as exc:
            self.breaker.record_success(self._clock())  # it answered, if uselessly
            raise AnalyzerResponseError(
                f"{exc}; a chat completion of max_tokens={self.config.max_tokens} is far smaller, "
                "so LLM_URL probably points at something else: check it"
            ) from exc
        except _RetryableStatusError as exc:
            self.breaker.record_failure(self._clock())
            raise AnalyzerUnavailableError(
                f"{url} answered {exc.response.status_code} on {attempts} attempts: "
                f"{_excerpt(exc.response.text)}"
            ) from None
        except httpx.TimeoutException as exc:
            self.breaker.record_failure(self._clock())
            raise AnalyzerUnavailableError(
                f"{url} timed out on {attempts} attempts ({type(exc).__name__}; connect timeout "
                f"{self.config.connect_timeout_seconds}s, read timeout "
                f"{self.config.read_timeout_seconds}s)"
            ) from exc
        except httpx.TransportError as exc:
            self.breaker.record_failure(self._clock())
            raise AnalyzerUnavailableError(
                f"cannot reach {url} on {attempts} attempts ({type(exc).__name__}: {exc}); is the "
                "LLM server running at LLM_URL?"
            ) from exc
        self.breaker.record_success(self._clock())
        return response

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise AnalyzerUnavailableError("the LLM analyzer is closed")
        if self._client is None:
            headers = {"Accept": "application/json"}
            if self.config.api_key:
                headers["Authorization"] = f"Bearer {self.config.api_key}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(
                    self.config.read_timeout_seconds,
                    connect=self.config.connect_timeout_seconds,
                ),
            )
        return self._client

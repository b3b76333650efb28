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
    `parse_llm_reply` (pure, `streams.analyzers.reply`) finds the assessment in the model's
    text; see its docstring.
    The `Analysis` records the model (as the server names it), `prompt_hash` (sha256 of the
    messages as canonical JSON: same prompt, same hash), the token counts from `usage` when the
    server sends them, and the latency of the whole call including retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
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
from streams.analyzers.reply import (
    REASONING_LIMIT,
    SUMMARY_LIMIT,
    excerpt,
    message_text,
    parse_llm_reply,
    token_count,
)
from streams.analyzers.rules import is_night, score_batch
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
    risk_level,
)

logger = logging.getLogger(__name__)

ANALYZER_NAME = "llm"
RETRYABLE_STATUS = frozenset({408, 429})  # besides every 5xx
_NAME_LIMIT = 80

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "risk_score": {"type": "integer", "minimum": 0, "maximum": 100},
        "risk_level": {"type": "string", "enum": [level.value for level in RiskLevel]},
        "summary": {"type": "string", "maxLength": SUMMARY_LIMIT},
        "reasoning": {"type": "string", "maxLength": REASONING_LIMIT},
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
    system_prompt: str = SYSTEM_PROMPT  # another prompt: a candidate of `hsi reanalyze`

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.system_prompt.strip():
            problems.append("system_prompt must not be empty")
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


# --- prompt -------------------------------------------------------------------------------------


def clean_text(text: str, limit: int = _NAME_LIMIT) -> str:
    """`text` on one line: control characters become spaces, runs of spaces one, at most
    `limit` characters (an ellipsis marks a cut)."""
    spaced = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    single = " ".join(spaced.split())
    return single if len(single) <= limit else single[: limit - 1] + "…"


def rules_floor(
    score: int, reasoning: str, rules: Analysis, thresholds: SeverityThresholds
) -> tuple[int, str]:
    """The model's score, raised to the lowest score of the level one below the rules scorer's
    level when it was lower, and its reasoning saying so.

    A guard against a model argued (or mistaken) out of a clear finding: a person at night that
    the rules rate high can be rated medium by the model, not low. The model may still rate any
    batch higher than the rules do.
    """
    ranges = thresholds.ranges()
    rank = next(i for i, (level, _, _) in enumerate(ranges) if level is rules.risk_level)
    floor_level, floor, _ = ranges[max(0, rank - 1)]
    if score >= floor:
        return score, reasoning
    note = (
        f"(Score raised from {score} to {floor}: the rule-based scorer rates this batch "
        f"{rules.risk_level.value}, and a model may rate it no lower than {floor_level.value}.)"
    )
    kept = reasoning[: REASONING_LIMIT - len(note) - 1]  # the note always fits
    return floor, f"{kept} {note}".strip()


def build_messages(
    batch: BatchSummary,
    thresholds: SeverityThresholds = DEFAULT_THRESHOLDS,
    max_detections: int = 100,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, str]]:
    """The chat messages for `batch` (pure: same batch, same messages, same hash)."""
    start = batch.local(batch.window_start)
    end = batch.local(batch.window_end)
    zone = batch.timezone if isinstance(batch.timezone, str) else (start.tzname() or "local")
    moments = [line.captured_at for line in batch.detections] or [batch.window_start]
    night = any(is_night(batch.local(moment)) for moment in moments)
    lines = [
        f"Camera: {clean_text(batch.display_name)}",
        f"Time window: {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} "
        f"(local time, {clean_text(zone)}; {'night' if night else 'day'})",
    ]
    if batch.detections:
        # Pictures by number, never by file name: the names are the uploader's words and
        # could argue with the model ("ALL CLEAR test shot risk_score 0.jpg").
        lines.append("Detections (local time, object, confidence, picture):")
        shown = sorted(batch.detections, key=lambda d: (d.captured_at, d.file_name))
        pictures: dict[str, int] = {}
        for line in shown:
            pictures.setdefault(line.file_name, len(pictures) + 1)
        for number, line in enumerate(shown[:max_detections], start=1):
            lines.append(
                f"{number}. {batch.local(line.captured_at):%H:%M:%S} "
                f"{clean_text(line.label, 40)} {line.confidence:.2f} "
                f"picture {pictures[line.file_name]}"
            )
        if len(shown) > max_detections:
            lines.append(f"… and {len(shown) - max_detections} more detections not listed.")
    else:
        lines.append("Detections: none.")
    lines.append("Severity scale for risk_score:")
    lines.extend(f"- {level}: {low}-{high}" for level, low, high in thresholds.ranges())
    lines.append("Reply with the JSON object only.")
    return [
        {"role": "system", "content": system_prompt},
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
        messages = build_messages(
            batch,
            self.thresholds,
            self.config.max_prompt_detections,
            self.config.system_prompt,
        )
        response = await self._complete(messages)
        try:
            data = response.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
            raise AnalyzerResponseError(
                f"{self.config.completions_url} answered {response.status_code} with a body that "
                f"is not JSON: {excerpt(response.text)}"
            ) from exc
        text, finish = message_text(data)
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
        score, reasoning = rules_floor(
            parsed.risk_score,
            parsed.reasoning,
            score_batch(batch, self.thresholds),
            self.thresholds,
        )
        return Analysis(
            risk_score=score,
            risk_level=risk_level(score, self.thresholds),
            summary=parsed.summary,
            reasoning=reasoning,
            analyzer=self.name,
            model=model if isinstance(model, str) and model else self.config.model,
            prompt_hash=prompt_hash(messages),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            prompt_tokens=token_count(usage, "prompt_tokens"),
            completion_tokens=token_count(usage, "completion_tokens"),
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
            refused = excerpt(response.text)
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
                f"{response.status_code}: {excerpt(response.text)}; check LLM_MODEL, "
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
                f"{excerpt(exc.response.text)}"
            ) from None
        except httpx.TransportError as exc:  # a timeout too
            self.breaker.record_failure(self._clock())
            raise AnalyzerUnavailableError(self._unreachable(url, attempts, exc)) from exc
        self.breaker.record_success(self._clock())
        return response

    def _unreachable(self, url: str, attempts: int, exc: httpx.TransportError) -> str:
        """Why no attempt got an answer, in words that point at the likely cause."""
        if isinstance(exc, httpx.TimeoutException):
            return (
                f"{url} timed out on {attempts} attempts ({type(exc).__name__}; connect timeout "
                f"{self.config.connect_timeout_seconds}s, read timeout "
                f"{self.config.read_timeout_seconds}s)"
            )
        return (
            f"cannot reach {url} on {attempts} attempts ({type(exc).__name__}: {exc}); is the "
            "LLM server running at LLM_URL?"
        )

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

"""Resilience pieces shared by the clients of the AI services: backoff, circuit breaker, retry,
bounded answers.

Everything that decides takes the time (or the random draw) as an argument, so the decisions are
pure and tested with tables; only `retry_call` sleeps, through an injectable `sleep`.
`post_capped` reads an answer only up to a size limit, so a service that sends megabytes of
garbage cannot make HSI buffer them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024

_MAX_EXPONENT = 1000  # 2.0**1000 is still a finite float; beyond it the cap applies anyway


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry).

    Exponential growth capped at `cap`, with "equal jitter": the result lies in
    [raw / 2, raw] where raw = min(cap, base * 2**attempt) and `jitter` in [0, 1] picks the point
    (0 → raw / 2, 1 → raw). Pass `random.random()` as `jitter` in production.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError(f"base and cap must be >= 0, got base={base} cap={cap}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be a fraction in [0, 1], got {jitter}")
    raw = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return raw / 2.0 + raw / 2.0 * jitter


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a failing service for a while, then lets one probe through.

    - closed: every call is allowed; `failure_threshold` consecutive failures open the circuit.
    - open: calls are refused until `reset_seconds` have passed since it opened; the next `allow`
      then moves to half_open and lets that one call through as a probe.
    - half_open: only the probe is allowed; its success closes the circuit, its failure opens it
      again. A probe whose outcome is never recorded (e.g. the caller was cancelled) is
      considered lost after `reset_seconds`, and another probe is allowed.

    Time is always an argument (monotonic seconds); the breaker never reads a clock.
    It is not thread-safe: use it from one event loop.
    """

    def __init__(self, failure_threshold: int, reset_seconds: float) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_seconds <= 0:
            raise ValueError(f"reset_seconds must be > 0, got {reset_seconds}")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at = 0.0

    @property
    def state(self) -> CircuitState:
        """The state after the last call; open → half_open happens in `allow`."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self, now: float) -> bool:
        """Whether a call may go to the service now."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            if now - self._opened_at < self.reset_seconds:
                return False
            self._state = CircuitState.HALF_OPEN
            self._probe_at = now
            return True
        if now - self._probe_at >= self.reset_seconds:
            self._probe_at = now
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until `allow` may say yes again (0 when it would now)."""
        if self._state is CircuitState.CLOSED:
            return 0.0
        since = self._opened_at if self._state is CircuitState.OPEN else self._probe_at
        return max(0.0, self.reset_seconds - (now - since))

    def record_success(self, now: float) -> None:
        """The service answered properly: close the circuit."""
        del now  # kept for a uniform, time-explicit interface
        self._state = CircuitState.CLOSED
        self._failures = 0

    def record_failure(self, now: float) -> None:
        """The service failed; open the circuit at the threshold, or when a probe fails."""
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = CircuitState.OPEN
            self._opened_at = now


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base: float,
    cap: float,
    retry_on: Callable[[Exception], bool],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await `fn()` up to `attempts` times, sleeping `backoff_delay` between tries.

    Only exceptions for which `retry_on` is true are retried; any other exception, and the last
    one after the final attempt, propagates unchanged.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            if attempt + 1 >= attempts or not retry_on(exc):
                raise
            await sleep(backoff_delay(attempt, base, cap, rand()))
            attempt += 1


class ResponseTooLargeError(Exception):
    """An answer longer than the client accepts; each client translates it into its own error."""

    def __init__(self, url: str, status_code: int, max_bytes: int, declared: int | None) -> None:
        size = f"declares {declared} bytes" if declared is not None else "goes on past the limit"
        super().__init__(
            f"{url} answered HTTP {status_code} with a body that {size}, more than the "
            f"{max_bytes} bytes accepted; the rest was not read"
        )
        self.status_code = status_code
        self.max_bytes = max_bytes
        self.declared = declared


async def post_capped(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, **kwargs: Any
) -> httpx.Response:
    """POST and read the whole answer, refusing one longer than `max_bytes`.

    A `Content-Length` over the limit is refused before the body is read; otherwise the body is
    read chunk by chunk and dropped as soon as it passes the limit (measured after any
    content-encoding is undone), so at most `max_bytes` plus one chunk is held. Returns a read
    response (status, content type and body); raises `ResponseTooLargeError`, or httpx's own
    errors for connect, timeout and transport failures.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    async with client.stream("POST", url, **kwargs) as response:
        declared = _declared_length(response)
        if declared is not None and declared > max_bytes:
            raise ResponseTooLargeError(url, response.status_code, max_bytes, declared)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise ResponseTooLargeError(url, response.status_code, max_bytes, None)
    content_type = response.headers.get("content-type")
    return httpx.Response(
        response.status_code,
        headers={"content-type": content_type} if content_type else None,
        content=bytes(body),
        request=response.request,
    )


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None

"""Backoff, circuit breaker and retry helper shared by the AI service clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from streams.resilience import CircuitBreaker, CircuitState, backoff_delay, retry_call


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter", "expected"),
    [
        (0, 0.5, 10.0, 1.0, 0.5),
        (1, 0.5, 10.0, 1.0, 1.0),
        (2, 0.5, 10.0, 1.0, 2.0),
        (3, 0.5, 10.0, 1.0, 4.0),
        (0, 0.5, 10.0, 0.0, 0.25),
        (2, 0.5, 10.0, 0.5, 1.5),
        (5, 0.5, 10.0, 1.0, 10.0),
        (5, 0.5, 10.0, 0.0, 5.0),
        (10_000, 0.5, 10.0, 1.0, 10.0),
        (3, 0.0, 10.0, 1.0, 0.0),
        (3, 1.0, 0.0, 1.0, 0.0),
    ],
)
def test_backoff_delay_grows_exponentially_within_cap_and_jitter(
    attempt: int, base: float, cap: float, jitter: float, expected: float
) -> None:
    """The delay is min(cap, base·2^attempt) scaled into [½, 1] by the jitter fraction."""
    assert backoff_delay(attempt, base, cap, jitter) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter"),
    [(-1, 0.5, 1.0, 0.5), (0, -0.5, 1.0, 0.5), (0, 0.5, -1.0, 0.5), (0, 0.5, 1.0, 1.5)],
)
def test_backoff_delay_rejects_nonsense(
    attempt: int, base: float, cap: float, jitter: float
) -> None:
    """Negative attempts, bases or caps and jitter outside [0, 1] are errors."""
    with pytest.raises(ValueError, match="must be"):
        backoff_delay(attempt, base, cap, jitter)


# Steps are (operation, time, expected allow() result or None, expected state afterwards).
Step = tuple[str, float, bool | None, CircuitState]
CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            [("allow", 0, True, CLOSED), ("fail", 0, None, CLOSED), ("fail", 1, None, CLOSED)],
            id="stays-closed-below-threshold",
        ),
        pytest.param(
            [
                ("fail", 0, None, CLOSED),
                ("fail", 1, None, CLOSED),
                ("fail", 2, None, OPEN),
                ("allow", 3, False, OPEN),
                ("allow", 11.9, False, OPEN),
            ],
            id="opens-at-threshold-and-refuses",
        ),
        pytest.param(
            [
                ("fail", 0, None, CLOSED),
                ("fail", 1, None, CLOSED),
                ("ok", 2, None, CLOSED),
                ("fail", 3, None, CLOSED),
                ("fail", 4, None, CLOSED),
                ("allow", 5, True, CLOSED),
            ],
            id="success-resets-the-count",
        ),
        pytest.param(
            [
                ("fail", 0, None, CLOSED),
                ("fail", 0, None, CLOSED),
                ("fail", 0, None, OPEN),
                ("allow", 10, True, HALF),
                ("allow", 10, False, HALF),
                ("ok", 11, None, CLOSED),
                ("allow", 11, True, CLOSED),
            ],
            id="half-opens-after-reset-one-probe-then-closes",
        ),
        pytest.param(
            [
                ("fail", 0, None, CLOSED),
                ("fail", 0, None, CLOSED),
                ("fail", 0, None, OPEN),
                ("allow", 10, True, HALF),
                ("fail", 11, None, OPEN),
                ("allow", 20, False, OPEN),
                ("allow", 21, True, HALF),
            ],
            id="failed-probe-reopens-for-a-full-period",
        ),
        pytest.param(
            [
                ("fail", 0, None, CLOSED),
                ("fail", 0, None, CLOSED),
                ("fail", 0, None, OPEN),
                ("allow", 10, True, HALF),
                ("allow", 19, False, HALF),
                ("allow", 20, True, HALF),
            ],
            id="lost-probe-is-replaced-after-a-period",
        ),
    ],
)
def test_circuit_breaker_follows_its_state_machine(steps: list[Step]) -> None:
    """Each step's allow() answer and the resulting state match the table (threshold 3, 10 s)."""
    breaker = CircuitBreaker(failure_threshold=3, reset_seconds=10.0)
    for operation, now, allowed, state in steps:
        if operation == "allow":
            assert breaker.allow(now) is allowed, (operation, now)
        elif operation == "fail":
            breaker.record_failure(now)
        else:
            breaker.record_success(now)
        assert breaker.state is state, (operation, now)


@pytest.mark.parametrize(
    ("events", "now", "expected"),
    [([], 5.0, 0.0), ([0.0], 4.0, 6.0), ([0.0], 12.0, 0.0)],
)
def test_circuit_breaker_says_when_to_retry(
    events: list[float], now: float, expected: float
) -> None:
    """retry_after is 0 when closed and the rest of the reset period when open."""
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=10.0)
    for at in events:
        breaker.record_failure(at)
    assert breaker.retry_after(now) == pytest.approx(expected)


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, 0.0)])
def test_circuit_breaker_rejects_nonsense(threshold: int, reset: float) -> None:
    """A threshold below 1 or a non-positive reset period is an error."""
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(threshold, reset)


class Flaky:
    """Fails with the given exceptions, in order, then returns "done"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    """A sleep that records the delays instead of waiting, and its record."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    return delays, sleep


async def test_retry_call_retries_matching_errors_with_backoff() -> None:
    """Retryable errors are retried after growing delays until the call succeeds."""
    delays, sleep = recorder()
    flaky = Flaky(ConnectionError("a"), ConnectionError("b"))
    result = await retry_call(
        flaky,
        attempts=4,
        base=1.0,
        cap=60.0,
        retry_on=lambda exc: isinstance(exc, ConnectionError),
        sleep=sleep,
        rand=lambda: 1.0,
    )
    assert (result, flaky.calls, delays) == ("done", 3, [1.0, 2.0])


async def test_retry_call_raises_the_last_error_after_all_attempts() -> None:
    """When every attempt fails, the last error propagates after attempts-1 sleeps."""
    delays, sleep = recorder()
    flaky = Flaky(*(ConnectionError(str(n)) for n in range(5)))
    with pytest.raises(ConnectionError, match="2"):
        await retry_call(
            flaky,
            attempts=3,
            base=1.0,
            cap=60.0,
            retry_on=lambda exc: True,
            sleep=sleep,
            rand=lambda: 0.0,
        )
    assert (flaky.calls, delays) == (3, [0.5, 1.0])


async def test_retry_call_does_not_retry_other_errors() -> None:
    """An error the predicate refuses propagates at once, without sleeping."""
    delays, sleep = recorder()
    flaky = Flaky(KeyError("bad"))
    with pytest.raises(KeyError):
        await retry_call(
            flaky,
            attempts=5,
            base=1.0,
            cap=60.0,
            retry_on=lambda exc: isinstance(exc, ConnectionError),
            sleep=sleep,
        )
    assert (flaky.calls, delays) == (1, [])


async def test_retry_call_rejects_zero_attempts() -> None:
    """At least one attempt is required."""
    with pytest.raises(ValueError, match="attempts"):
        await retry_call(Flaky(), attempts=0, base=1.0, cap=1.0, retry_on=lambda exc: True)

"""API keys, token buckets, connection caps and route policies as pure decisions."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from hsi.api.security import (
    Bucket,
    ConnectionSlots,
    RateLimiter,
    Refusal,
    Tokens,
    admit_connection,
    key_matches,
    matching_key,
    route_policy,
    take_token,
)

KEYS = (SecretStr("alpha-key"), SecretStr("beta-key"))


@pytest.mark.parametrize(
    ("provided", "ok"),
    [("alpha-key", True), ("beta-key", True), ("alpha", False), ("", False), (None, False)],
)
def test_key_matches_any_configured_key(provided: str | None, ok: bool) -> None:
    """A key is accepted when it equals one of the configured keys."""
    assert key_matches(provided, KEYS) is ok


@pytest.mark.parametrize(
    ("tokens", "now", "allowed", "level", "retry_after"),
    [
        (None, 0.0, True, 59.0, 0.0),  # a new client starts with a full bucket (burst)
        (Tokens(0.0, 0.0), 0.5, False, 0.5, 0.5),  # half a token after 0.5 s at 1/s
        (Tokens(0.0, 0.0), 1.0, True, 0.0, 0.0),
        (Tokens(10.0, 0.0), 1000.0, True, 59.0, 0.0),  # capped at the per-minute burst
        (Tokens(0.5, 10.0), 5.0, False, 0.5, 0.5),  # a clock going back adds nothing
    ],
)
def test_token_bucket_refills_per_second(
    tokens: Tokens | None, now: float, allowed: bool, level: float, retry_after: float
) -> None:
    """60 per minute: one token a second, at most 60 saved up."""
    decision = take_token(tokens, now, per_minute=60)
    assert decision.allowed is allowed
    assert decision.tokens.level == pytest.approx(level)
    assert decision.retry_after == pytest.approx(retry_after)


def test_token_bucket_allows_the_burst_then_refuses() -> None:
    """A client may spend its whole bucket at once, then waits for the refill."""
    tokens = None
    results = []
    for _ in range(4):
        decision = take_token(tokens, 100.0, per_minute=3)
        tokens = decision.tokens
        results.append(decision.allowed)
    assert results == [True, True, True, False]
    assert decision.retry_after == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("total", "for_client", "expected"),
    [
        (0, 0, None),
        (9, 1, None),
        (10, 0, Refusal.SERVER_FULL),
        (5, 2, Refusal.TOO_MANY_FOR_CLIENT),
    ],
)
def test_admit_connection(total: int, for_client: int, expected: Refusal | None) -> None:
    """At most 10 live connections in all and 2 per client."""
    assert admit_connection(total, for_client, max_total=10, max_per_client=2) is expected


def test_connection_slots_count_and_release() -> None:
    """Slots are taken per client and given back."""
    slots = ConnectionSlots(max_total=2, max_per_client=1)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is Refusal.TOO_MANY_FOR_CLIENT
    assert slots.acquire("b") is None
    assert slots.acquire("c") is Refusal.SERVER_FULL
    slots.release("a")
    assert slots.acquire("c") is None
    assert slots.total == 2


@pytest.mark.parametrize(
    ("path", "needs_key", "bucket", "key_in_query"),
    [
        ("/health", False, None, False),
        ("/ready", False, Bucket.GENERAL, False),  # open, its numbers only with the key
        ("/openapi.json", True, Bucket.GENERAL, False),
        ("/asyncapi.json", True, Bucket.GENERAL, False),
        ("/metrics", True, Bucket.GENERAL, False),
        ("/api/events", True, Bucket.GENERAL, False),
        ("/api/media/front_door/Front Door/x.jpg", True, Bucket.MEDIA, False),
        ("/api/detections/abc/thumbnail", True, Bucket.MEDIA, False),
        ("/api/detections", True, Bucket.GENERAL, False),
        ("/api/events/abc/export", True, Bucket.MEDIA, False),  # heavy: the media bucket
        ("/api/events/stats", True, Bucket.GENERAL, False),
        ("/api/live", True, Bucket.GENERAL, True),
        ("/elsewhere", False, Bucket.GENERAL, False),
    ],
)
def test_route_policy(
    path: str, needs_key: bool, bucket: Bucket | None, key_in_query: bool
) -> None:
    """Which routes need the key, which bucket they draw from, where the key may come from."""
    policy = route_policy(path)
    assert (policy.needs_key, policy.bucket, policy.key_in_query) == (
        needs_key,
        bucket,
        key_in_query,
    )


def test_metrics_may_be_opened_for_a_scraper() -> None:
    """API_METRICS_OPEN exempts /metrics from the key, nothing else."""
    assert not route_policy("/metrics", metrics_open=True).needs_key
    assert route_policy("/api/events", metrics_open=True).needs_key
    assert route_policy("/openapi.json", metrics_open=True).needs_key


def test_matching_key_names_the_key() -> None:
    """The limiter counts a valid key's requests by the key: which one matched."""
    assert matching_key("beta-key", KEYS) == 1
    assert matching_key("gamma-key", KEYS) is None
    assert matching_key("", (SecretStr(""),)) is None  # an empty key matches nothing


def test_rate_limiter_table_is_bounded() -> None:
    """A flood of addresses keeps at most `max_clients` buckets, forgetting the least recent."""
    limiter = RateLimiter(per_minute=2, max_clients=100)
    for n in range(10_000):
        assert limiter.take(f"10.0.{n // 256}.{n % 256}", now=1.0).allowed
    assert len(limiter) == 100
    # a client seen last keeps its bucket (its second request is counted, its third refused)
    assert limiter.take("10.0.39.15", now=1.0).allowed
    assert not limiter.take("10.0.39.15", now=1.0).allowed


def test_rate_limiter_forgets_refilled_buckets() -> None:
    """Buckets unused for a minute are full again, so they are dropped."""
    limiter = RateLimiter(per_minute=5)
    for n in range(50):
        limiter.take(f"a{n}", now=0.0)
    limiter.take("late", now=61.0)
    assert len(limiter) == 1

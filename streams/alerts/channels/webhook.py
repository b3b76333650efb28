"""The webhook channel: POST the alert as JSON, optionally signed.

Headers: `Content-Type: application/json`, `Idempotency-Key` (the same on every attempt of the
event), `X-HSI-Event: alert` and, with a secret, `X-HSI-Signature: t=<unix seconds>,v1=<hex>`:
the HMAC-SHA256 under the secret of the timestamp, a dot and the exact body bytes (the scheme
Stripe uses). The timestamp is signed, so a receiver can refuse a recorded request replayed
later: it recomputes the HMAC of `f"{t}.".encode() + body`, compares it in constant time, and
refuses a `t` more than five minutes from its own clock (`verify_signature` does exactly that);
within those minutes, the `Idempotency-Key` tells a repeat from a new alert.

Any 2xx is delivered. Timeouts, connection errors, 429 and 5xx are transient (retried at once
with backoff); other answers are not.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import httpx
import orjson

from streams.alerts.config import WebhookConfig
from streams.alerts.errors import ChannelError
from streams.alerts.message import Alert

SIGNATURE_HEADER = "X-HSI-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


SIGNATURE_TOLERANCE_SECONDS = 300


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-HSI-Signature` value of `body` sent at `timestamp` (Unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    header: str,
    secret: str,
    body: bytes,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the header is this body's signature under `secret`, made within
    `tolerance` seconds of `now` (a replayed request is older)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        (stamp,) = parts.get("t", [])
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(given, expected) for given in parts.get("v1", []))


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        config: WebhookConfig,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds), follow_redirects=False
        )

    async def send(self, alert: Alert, key: str) -> None:
        body = orjson.dumps(alert.payload(key))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key,
            "X-HSI-Event": "alert",
            "User-Agent": "hsi-notify",
        }
        if self._config.secret:
            headers[SIGNATURE_HEADER] = signature(self._config.secret, body, int(self._clock()))
        try:
            response = await self._client.post(self._config.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ChannelError(
                self.name,
                f"no answer within {self._config.timeout_seconds} s ({type(exc).__name__}); "
                "check that the receiver is up, or raise WEBHOOK_TIMEOUT_SECONDS",
                transient=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise ChannelError(
                self.name,
                f"cannot reach the receiver ({type(exc).__name__}: {exc}); check "
                "DEFAULT_WEBHOOK_URL and that the receiver is up",
                transient=True,
            ) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        transient = status == 429 or status >= 500
        raise ChannelError(
            self.name,
            f"the receiver answered HTTP {status}: {response.text[:200]!r}",
            transient=transient,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

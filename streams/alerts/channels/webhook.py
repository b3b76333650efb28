"""The webhook channel: POST the alert as JSON, optionally signed.

Headers: `Content-Type: application/json`, `Idempotency-Key` (the same on every attempt of the
event), `X-HSI-Event: alert` and, with a secret, `X-HSI-Signature: sha256=<hex>`: the
HMAC-SHA256 of the exact body bytes under the secret. A receiver checks it with

    hmac.compare_digest(header, "sha256=" + hmac.new(secret, body, "sha256").hexdigest())

Any 2xx is delivered. Timeouts, connection errors, 429 and 5xx are transient (retried at once
with backoff); other answers are not.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx
import orjson

from streams.alerts.config import WebhookConfig
from streams.alerts.errors import ChannelError
from streams.alerts.message import Alert

SIGNATURE_HEADER = "X-HSI-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def signature(secret: str, body: bytes) -> str:
    """The `X-HSI-Signature` value of `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    name = "webhook"

    def __init__(self, config: WebhookConfig, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
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
            headers[SIGNATURE_HEADER] = signature(self._config.secret, body)
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

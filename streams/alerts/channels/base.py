"""What a channel is: something that delivers one alert, or raises `ChannelError`."""

from __future__ import annotations

from typing import Protocol

from streams.alerts.message import Alert


class Channel(Protocol):
    """Delivers alerts to one kind of receiver.

    `send` returns once the receiver has the alert (HTTP 2xx, the SMTP server accepted the
    message, the broker acknowledged the QoS 1 publish) and raises `ChannelError` otherwise.
    `key` is the idempotency key of (event, channel): the same on every attempt.
    """

    name: str

    async def send(self, alert: Alert, key: str) -> None: ...

    async def aclose(self) -> None: ...

"""The delivery channels: webhook, e-mail and MQTT, built from a `NotifyConfig`."""

from __future__ import annotations

from streams.alerts.channels.base import Channel
from streams.alerts.channels.mail import EmailChannel
from streams.alerts.channels.webhook import WebhookChannel
from streams.alerts.config import NotifyConfig

__all__ = ["Channel", "EmailChannel", "WebhookChannel", "build_channels"]


def build_channels(config: NotifyConfig) -> dict[str, Channel]:
    """One channel per configured kind (nothing connects before the first alert)."""
    channels: dict[str, Channel] = {}
    if config.webhook is not None:
        channels["webhook"] = WebhookChannel(config.webhook)
    if config.email is not None:
        channels["email"] = EmailChannel(
            config.email, config.camera_root, config.snapshot_max_width
        )
    if config.mqtt is not None:
        # Imported here: the MQTT client library is needed only when MQTT_URL is set.
        from streams.alerts.channels.mqtt import MqttChannel

        channels["mqtt"] = MqttChannel(config.mqtt)
    return channels

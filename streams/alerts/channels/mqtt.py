"""The MQTT channel: each alert on `{prefix}/{camera}/event`, the last one retained on
`{prefix}/{camera}/last_event`, and a retained Home Assistant discovery config on
`{discovery}/sensor/hsi_{camera}/config` so that each camera shows up as a sensor whose state is
the last event's risk level (its other fields are the sensor's attributes).

Every alert opens its own connection (MQTT_URL: `mqtt://user:password@host:1883`, or `mqtts://`
for TLS, port 8883 by default), publishes the three messages with QoS 1 (each acknowledged by
the broker) and disconnects: alerts are rare, and a connection per alert needs no reconnect
logic. Refused credentials are permanent errors; everything else is transient.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from typing import Any

import aiomqtt
import orjson

from streams.alerts.config import MqttConfig, parse_mqtt_url
from streams.alerts.errors import ChannelError
from streams.alerts.message import Alert

_REFUSED_CREDENTIALS = frozenset({4, 5, 134, 135})  # MQTT 3.1.1 and 5 reason codes


def topics(config: MqttConfig, camera: str) -> tuple[str, str, str]:
    """(event topic, retained last-event topic, Home Assistant discovery topic)."""
    base = f"{config.topic_prefix}/{camera}"
    return (
        f"{base}/event",
        f"{base}/last_event",
        f"{config.discovery_prefix}/sensor/hsi_{camera}/config",
    )


def discovery_config(config: MqttConfig, camera: str, name: str | None = None) -> dict[str, Any]:
    """The Home Assistant MQTT discovery payload that makes `camera` a sensor (`name`: what
    people call the camera, its folder's name)."""
    _, last_event, _ = topics(config, camera)
    return {
        "name": "Last event",
        "unique_id": f"hsi_{camera}_last_event",
        "state_topic": last_event,
        "value_template": "{{ value_json.risk_level }}",
        "json_attributes_topic": last_event,
        "icon": "mdi:cctv",
        "device": {
            "identifiers": [f"hsi_{camera}"],
            "name": f"HSI {name or camera}",
            "manufacturer": "HSI",
            "model": "Camera",
        },
    }


class MqttChannel:
    name = "mqtt"

    def __init__(self, config: MqttConfig) -> None:
        self._config = config
        self._broker = parse_mqtt_url(config.url)

    async def send(self, alert: Alert, key: str) -> None:
        config, broker = self._config, self._broker
        event_topic, last_topic, discovery_topic = topics(config, alert.camera_id)
        body = orjson.dumps(alert.payload(key))
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=f"{config.client_id_prefix}-{uuid.uuid4().hex[:12]}",
            timeout=config.timeout_seconds,
            tls_context=ssl.create_default_context() if broker.tls else None,
        )
        try:
            async with asyncio.timeout(config.timeout_seconds), client:
                await client.publish(
                    discovery_topic,
                    orjson.dumps(discovery_config(config, alert.camera_id, alert.camera_name)),
                    qos=1,
                    retain=True,
                )
                await client.publish(event_topic, body, qos=1)
                await client.publish(last_topic, body, qos=1, retain=True)
        except aiomqtt.MqttCodeError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            refused = isinstance(code, int) and code in _REFUSED_CREDENTIALS
            hint = "check the user and password in MQTT_URL" if refused else "check the broker"
            raise ChannelError(
                self.name,
                f"{broker.host}:{broker.port} refused: {exc}; {hint}",
                transient=not refused,
            ) from exc
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise ChannelError(
                self.name,
                f"cannot publish to {broker.host}:{broker.port} ({type(exc).__name__}: {exc}); "
                "check MQTT_URL and that the broker is up",
                transient=True,
            ) from exc

    async def aclose(self) -> None:
        return None

"""The MQTT channel against a real broker (127.0.0.1:1883, or a Mosquitto of the tests' own)."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.alerts import ChannelError, MqttConfig
from streams.alerts.config import parse_mqtt_url
from streams.alerts.message import Alert, build_alert, idempotency_key
from tests.alerts.mqtt_probe import speaks_mqtt
from tests.alerts.support import analysis, batch
from tests.fakes.server import free_port

aiomqtt = pytest.importorskip("aiomqtt", reason="the MQTT client library aiomqtt is not installed")

from streams.alerts.channels.mqtt import MqttChannel, topics  # noqa: E402 (needs aiomqtt)

NOW = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)


def _alert(camera: str = "front_door") -> Alert:
    closed = batch(camera)
    return build_alert(analysis(closed, "2-0"), closed, "nights", "http://hsi.test", NOW)


def test_mqtt_urls() -> None:
    """mqtt:// and mqtts:// with optional credentials; anything else is refused."""
    plain = parse_mqtt_url("mqtt://broker.lan")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.lan", 1883, False, None)
    secure = parse_mqtt_url("mqtts://ha:p%40ss@broker.lan")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8883, True, "ha", "p@ss")
    with pytest.raises(ValueError, match="use mqtt://host:1883"):
        parse_mqtt_url("http://broker.lan")


def _json(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return orjson.loads(message.payload)


async def test_mqtt_publishes_event_last_event_and_discovery(mqtt_url: str) -> None:
    """The event, the retained last event and the retained Home Assistant config arrive."""
    run = uuid.uuid4().hex[:8]
    config = MqttConfig(mqtt_url, topic_prefix=f"hsi-test-{run}", discovery_prefix=f"ha-{run}")
    broker = parse_mqtt_url(mqtt_url)
    event_topic, last_topic, discovery_topic = topics(config, "front_door")
    assert discovery_topic == f"ha-{run}/sensor/hsi_front_door/config"
    alert = _alert()
    key = idempotency_key("front_door", alert.event_id, "mqtt")
    got: dict[str, aiomqtt.Message] = {}
    try:
        async with aiomqtt.Client(broker.host, broker.port) as listener:
            await listener.subscribe(f"hsi-test-{run}/#", qos=1)
            await listener.subscribe(f"ha-{run}/#", qos=1)
            await MqttChannel(config).send(alert, key)
            async with asyncio.timeout(5):
                async for message in listener.messages:
                    got[str(message.topic)] = message
                    if len(got) == 3:
                        break
        assert set(got) == {event_topic, last_topic, discovery_topic}
        event = _json(got[event_topic])
        assert event["idempotency_key"] == key
        assert event["risk_level"] == "high"
        discovery = _json(got[discovery_topic])
        assert discovery["state_topic"] == last_topic
        assert discovery["unique_id"] == "hsi_front_door_last_event"
        # a newcomer gets the retained ones: Home Assistant after a restart
        retained: dict[str, aiomqtt.Message] = {}
        async with aiomqtt.Client(broker.host, broker.port) as late:
            await late.subscribe(last_topic, qos=1)
            await late.subscribe(discovery_topic, qos=1)
            async with asyncio.timeout(5):
                async for message in late.messages:
                    retained[str(message.topic)] = message
                    if len(retained) == 2:
                        break
        assert all(m.retain for m in retained.values())
        assert _json(retained[last_topic])["event_id"] == alert.event_id
    finally:
        async with aiomqtt.Client(broker.host, broker.port) as cleaner:
            for topic in (last_topic, discovery_topic):
                await cleaner.publish(topic, b"", qos=1, retain=True)


async def test_unreachable_mqtt_broker_is_transient() -> None:
    """A broker that is not there is worth retrying."""
    channel = MqttChannel(MqttConfig(f"mqtt://127.0.0.1:{free_port()}", timeout_seconds=2))
    with pytest.raises(ChannelError, match="cannot publish") as caught:
        await channel.send(_alert(), "k")
    assert caught.value.transient


def test_the_broker_the_tests_use_talks_mqtt(mqtt_url: str) -> None:
    """The tests' broker passed the probe: it subscribes and hands back what is published."""
    broker = parse_mqtt_url(mqtt_url)
    assert speaks_mqtt(broker.host, broker.port)


@contextmanager
def _listener(reply: bytes | None) -> Iterator[int]:
    """A loopback port whose one connection gets `reply` (None: silence) until the peer closes."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                if reply is not None:
                    conn.sendall(reply)
                while conn.recv(1024):
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield server.getsockname()[1]
        thread.join(timeout=30)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", id="http"),
        pytest.param(b"\x20\x02\x00\x05", id="connack-refused"),
        pytest.param(b"\x20\x02\x00\x00", id="connack-then-nothing"),
        pytest.param(None, id="silent"),
    ],
)
def test_a_port_that_does_not_talk_mqtt_is_no_broker(reply: bytes | None) -> None:
    """Something listening on the port is not enough: it must answer as an MQTT broker."""
    with _listener(reply) as port:
        assert not speaks_mqtt("127.0.0.1", port)


def test_a_port_nobody_listens_on_is_no_broker() -> None:
    """A refused connection is no broker either."""
    assert not speaks_mqtt("127.0.0.1", free_port())

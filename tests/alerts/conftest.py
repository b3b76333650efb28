"""Fixtures of the alert tests: a webhook receiver, an SMTP server and an MQTT broker, all real
and local, and the stream names of the test."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from streams.names import StreamNames
from tests.alerts.mqtt_probe import speaks_mqtt
from tests.alerts.support import Receiver, webhook_receiver
from tests.fakes.server import free_port
from tests.tools import require_tool, unavailable

MQTT_HOST = "127.0.0.1"
MQTT_DEFAULT_PORT = 1883


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port (200 unless told otherwise)."""
    with webhook_receiver(Receiver(secret="s3cret")) as running:
        yield running


# --- SMTP ---------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd name
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.box.lock:
            self.box.messages.append(parsed)
            self.box.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """An aiosmtpd server on a free loopback port, keeping every message it accepts."""
    controller_module = pytest.importorskip(
        "aiosmtpd.controller", reason="aiosmtpd is needed for the e-mail tests (pip)"
    )
    box = Mailbox("127.0.0.1", free_port())
    controller = controller_module.Controller(_Handler(box), hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# --- MQTT ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """The broker on 127.0.0.1:1883 when one talks MQTT there; else a Mosquitto of the
    session's own on a free port; else the MQTT tests are skipped (failed in CI)."""
    if speaks_mqtt(MQTT_HOST, MQTT_DEFAULT_PORT):
        yield f"mqtt://{MQTT_HOST}:{MQTT_DEFAULT_PORT}"
        return
    binary = require_tool(
        "mosquitto",
        "/usr/sbin/mosquitto",
        hint="no MQTT broker talks on 127.0.0.1:1883 either (Debian: apt-get install mosquitto)",
    )
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="hsi-mqtt-"))
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} {MQTT_HOST}\nallow_anonymous true\npersistence false\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not speaks_mqtt(MQTT_HOST, port):
            if process.poll() is not None or time.monotonic() > deadline:
                unavailable(f"mosquitto did not start talking MQTT on port {port}")
            time.sleep(0.02)
        yield f"mqtt://{MQTT_HOST}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)

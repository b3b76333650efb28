"""The webhook and e-mail channels against real local servers: an HTTP receiver, an SMTP server."""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from PIL import Image

from streams.alerts import ChannelError, EmailConfig, WebhookConfig
from streams.alerts.channels.mail import EmailChannel, message_id
from streams.alerts.channels.webhook import WebhookChannel, signature, verify_signature
from streams.alerts.message import Alert, build_alert, idempotency_key
from tests.alerts.conftest import Mailbox
from tests.alerts.support import Receiver, analysis, batch
from tests.conftest import PHOTOS
from tests.fakes.server import free_port

NOW = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)


def _alert(camera: str = "front_door", path: str = "Front Door/a.jpg") -> Alert:
    closed = batch(camera, path=path)
    return build_alert(analysis(closed, "2-0"), closed, "nights", "http://hsi.test", NOW)


# --- webhook ------------------------------------------------------------------------------------


async def test_webhook_posts_the_alert_signed(receiver: Receiver) -> None:
    """The receiver gets the JSON body, the idempotency key and a signature it can verify."""
    assert receiver.secret is not None
    channel = WebhookChannel(WebhookConfig(receiver.url, secret=receiver.secret))
    alert = _alert()
    key = idempotency_key("front_door", alert.event_id, "webhook")
    try:
        await channel.send(alert, key)
    finally:
        await channel.aclose()
    (request,) = receiver.delivered
    assert receiver.signed(request)
    stamp = int(request.headers["x-hsi-signature"].split(",")[0].removeprefix("t="))
    assert request.headers["x-hsi-signature"] == signature(receiver.secret, request.body, stamp)
    assert request.headers["idempotency-key"] == key
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.body)
    assert body["event_id"] == alert.event_id
    assert body["camera_id"] == "front_door"
    assert body["risk_level"] == "high"
    assert body["risk_score"] == 75
    assert body["summary"] == "A person at the door"
    assert body["links"]["event"] == f"http://hsi.test/api/events/{alert.event_id}"
    assert body["links"]["thumbnail"].startswith("http://hsi.test/api/detections/")


def test_a_replayed_webhook_is_refused_by_its_timestamp() -> None:
    """The signature covers the time it was made: a receiver refuses a request recorded and sent
    again later, one whose timestamp was changed, and one under another secret."""
    body = b'{"event_id": "e"}'
    header = signature("s3cret", body, 1_800_000_000)
    assert verify_signature(header, "s3cret", body, now=1_800_000_100)
    assert not verify_signature(header, "s3cret", body, now=1_800_000_301)  # replayed later
    forged = header.replace("t=1800000000", "t=1800000300")
    assert not verify_signature(forged, "s3cret", body, now=1_800_000_301)
    assert not verify_signature(header, "other", body, now=1_800_000_100)
    assert not verify_signature(header, "s3cret", body + b" ", now=1_800_000_100)
    for broken in ("", "sha256=abc", "t=x,v1=abc", "t=1,t=2,v1=abc"):
        assert not verify_signature(broken, "s3cret", body, now=1)


async def test_webhook_without_secret_is_not_signed(receiver: Receiver) -> None:
    """No WEBHOOK_SECRET, no signature header."""
    channel = WebhookChannel(WebhookConfig(receiver.url))
    try:
        await channel.send(_alert(), "k")
    finally:
        await channel.aclose()
    assert "x-hsi-signature" not in receiver.delivered[0].headers


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (404, False), (400, False)]
)
async def test_webhook_errors_say_whether_a_retry_may_help(
    receiver: Receiver, status: int, transient: bool
) -> None:
    """5xx and 429 are transient; other answers are not."""
    receiver.always = status
    channel = WebhookChannel(WebhookConfig(receiver.url))
    try:
        with pytest.raises(ChannelError, match=f"HTTP {status}") as caught:
            await channel.send(_alert(), "k")
    finally:
        await channel.aclose()
    assert caught.value.transient is transient


async def test_unreachable_webhook_is_transient() -> None:
    """A refused connection is worth retrying."""
    channel = WebhookChannel(WebhookConfig(f"http://127.0.0.1:{free_port()}/hook"))
    try:
        with pytest.raises(ChannelError, match="cannot reach the receiver") as caught:
            await channel.send(_alert(), "k")
    finally:
        await channel.aclose()
    assert caught.value.transient


# --- e-mail -------------------------------------------------------------------------------------


def _camera_root(tmp_path: Path) -> Path:
    root = tmp_path / "cameras"
    (root / "Front Door").mkdir(parents=True)
    shutil.copy(PHOTOS / "person-astronaut.jpg", root / "Front Door" / "a.jpg")
    return root


def _email(box: Mailbox) -> EmailConfig:
    return EmailConfig(
        host=box.host,
        port=box.port,
        from_address="hsi@home.test",
        recipients=("me@home.test", "you@home.test"),
        use_starttls=False,
    )


async def test_email_carries_the_snapshot(smtp_server: Mailbox, tmp_path: Path) -> None:
    """The SMTP server receives one message with the links and the picture as image/jpeg."""
    channel = EmailChannel(_email(smtp_server), _camera_root(tmp_path), snapshot_max_width=320)
    alert = _alert()
    key = idempotency_key("front_door", alert.event_id, "email")
    await channel.send(alert, key)
    (message,) = smtp_server.received()
    assert smtp_server.recipients == [["me@home.test", "you@home.test"]]
    assert message["Subject"].startswith("[HSI] HIGH risk (75) at Front Door")  # its folder
    assert message["Message-ID"] == message_id(key)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert alert.event_url in body.get_content()
    assert "Camera: Front Door (front_door)" in body.get_content()
    assert f"When: {alert.time:%Y-%m-%d %H:%M} {alert.time.tzname()}" in body.get_content()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "image/jpeg"
    picture = Image.open(io.BytesIO(attachment.get_content()))
    assert picture.format == "JPEG"
    assert picture.width == 320
    # the box's outline is drawn in yellow
    with Image.open(PHOTOS / "person-astronaut.jpg") as original:
        scale = 320 / original.width
    red, green, blue = picture.convert("RGB").getpixel((round(10 * scale) + 1, round(60 * scale)))
    assert (red > 180, green > 150, blue < 120) == (True, True, True)


async def test_email_without_the_picture_still_goes(smtp_server: Mailbox, tmp_path: Path) -> None:
    """A picture that is gone leaves the attachment out, not the alert."""
    channel = EmailChannel(_email(smtp_server), tmp_path, snapshot_max_width=320)
    await channel.send(_alert(path="Front Door/gone.jpg"), "k")
    (message,) = smtp_server.received()
    assert list(message.iter_attachments()) == []


async def test_unreachable_smtp_server_is_transient() -> None:
    """A refused connection is worth retrying."""
    config = EmailConfig(
        host="127.0.0.1", port=free_port(), from_address="a@b.test", recipients=("c@d.test",)
    )
    with pytest.raises(ChannelError, match="cannot talk to") as caught:
        await EmailChannel(config).send(_alert(), "k")
    assert caught.value.transient

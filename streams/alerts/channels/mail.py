"""The e-mail channel: one message per alert over SMTP (stdlib `smtplib`, in a worker thread).

The message has a plain-text body with the event's level, score, summary, reasoning and links,
and the picture of the event's first detection with its boxes as an `image/jpeg` attachment
(left out when the file is gone). Its `Message-ID` is derived from the idempotency key, so a
mail client shows a repeated attempt once. TLS: `use_tls` speaks SMTPS from the first byte,
`use_starttls` upgrades a plain connection; login only with a user.

SMTP 4xx answers, timeouts and dropped connections are transient; 5xx answers (a refused
recipient, a failed login) are not.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from streams.alerts.config import EmailConfig
from streams.alerts.errors import ChannelError
from streams.alerts.message import Alert
from streams.alerts.snapshot import render_snapshot


def message_id(key: str) -> str:
    """A stable `Message-ID` for an idempotency key."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{digest}@hsi.alerts>"


def build_message(
    config: EmailConfig, alert: Alert, key: str, picture: bytes | None
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"{alert.subject}: {alert.summary}"[:200]
    message["From"] = config.from_address
    message["To"] = ", ".join(config.recipients)
    message["Date"] = format_datetime(alert.analyzed_at)
    message["Message-ID"] = message_id(key) if key else make_msgid()
    message["X-HSI-Idempotency-Key"] = key
    lines = [
        f"Camera: {alert.camera_name} ({alert.camera_id})",
        f"Risk: {alert.risk_level} ({alert.risk_score}/100)",
        f"When: {alert.local_time}",
        *([alert.late_note] if alert.late_note else []),
        f"Objects: {', '.join(alert.object_types) or '-'}",
        f"Rule: {alert.rule}",
        "",
        alert.summary,
        "",
        alert.reasoning,
        "",
        f"Event: {alert.event_url}",
    ]
    if alert.thumbnail_url:
        lines.append(f"Thumbnail: {alert.thumbnail_url}")
    message.set_content("\n".join(lines))
    if picture is not None:
        message.add_attachment(
            picture, maintype="image", subtype="jpeg", filename=f"{alert.camera_id}.jpg"
        )
    return message


class EmailChannel:
    name = "email"

    def __init__(
        self, config: EmailConfig, camera_root: Path | None = None, snapshot_max_width: int = 1280
    ) -> None:
        self._config = config
        self._camera_root = camera_root
        self._max_width = snapshot_max_width

    async def send(self, alert: Alert, key: str) -> None:
        await asyncio.to_thread(self._send, alert, key)

    def _picture(self, alert: Alert) -> bytes | None:
        if self._camera_root is None or alert.snapshot is None:
            return None
        return render_snapshot(
            self._camera_root, alert.snapshot.path, alert.snapshot.boxes, self._max_width
        )

    def _send(self, alert: Alert, key: str) -> None:
        config = self._config
        message = build_message(config, alert, key, self._picture(alert))
        try:
            smtp: smtplib.SMTP
            if config.use_tls:
                smtp = smtplib.SMTP_SSL(
                    config.host,
                    config.port,
                    timeout=config.timeout_seconds,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
            with smtp:
                if config.use_starttls and not config.use_tls:
                    smtp.starttls(context=ssl.create_default_context())
                if config.user:
                    smtp.login(config.user, config.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(
                self.name,
                f"every recipient was refused ({', '.join(exc.recipients)}); check "
                "DEFAULT_EMAIL_RECIPIENTS",
                transient=False,
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(
                self.name,
                f"login refused ({exc.smtp_code}); check SMTP_USER and SMTP_PASSWORD",
                transient=False,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            detail = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise ChannelError(
                self.name,
                f"the SMTP server answered {exc.smtp_code}: {detail[:200]}",
                transient=400 <= exc.smtp_code < 500,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(
                self.name,
                f"the SMTP server does not support this ({exc}); check SMTP_USE_STARTTLS and "
                "SMTP_USE_TLS",
                transient=False,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(
                self.name,
                f"cannot talk to {config.host}:{config.port} ({type(exc).__name__}: {exc}); "
                "check SMTP_HOST, SMTP_PORT and that the server is up",
                transient=True,
            ) from exc

    async def aclose(self) -> None:
        return None

"""The frozen configs of alerting, mapped from settings by
`hsi.settings.components.notify_config`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from urllib.parse import unquote, urlsplit

from streams.alerts.kinds import CHANNELS


@dataclass(frozen=True)
class WebhookConfig:
    """POST each alert as JSON to `url`; with `secret`, sign the body (`X-HSI-Signature`)."""

    url: str
    timeout_seconds: float = 5.0
    secret: str | None = None


@dataclass(frozen=True)
class EmailConfig:
    """Mail each alert from `from_address` to `recipients` over SMTP.

    `use_tls`: TLS from the first byte (SMTPS, usually port 465); `use_starttls`: upgrade a plain
    connection with STARTTLS (usually port 587). Login only when `user` is set.
    """

    host: str
    from_address: str
    recipients: tuple[str, ...]
    port: int = 587
    user: str | None = None
    password: str | None = None
    use_tls: bool = False
    use_starttls: bool = True
    timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.use_tls and self.use_starttls:
            raise ValueError(
                "use_tls (SMTPS) and use_starttls exclude each other: choose one "
                "(SMTP_USE_TLS=true with SMTP_USE_STARTTLS=false for port 465)"
            )


@dataclass(frozen=True)
class MqttConfig:
    """Publish each alert to `{topic_prefix}/{camera}/event` and, retained,
    `{topic_prefix}/{camera}/last_event`, with a retained Home Assistant discovery config per
    camera under `{discovery_prefix}/sensor/hsi_{camera}/config`."""

    url: str  # mqtt://user:password@host:1883 or mqtts://host:8883
    topic_prefix: str = "hsi"
    discovery_prefix: str = "homeassistant"
    timeout_seconds: float = 10.0
    client_id_prefix: str = "hsi-notify"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool


def parse_mqtt_url(url: str) -> BrokerAddress:
    """`mqtt://user:password@host:1883` → its parts (`mqtts://` → TLS, default port 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(
            f"MQTT_URL {parts.scheme}://… is not accepted; use mqtt://host:1883 or "
            "mqtts://host:8883 (user and password as mqtt://user:password@host)"
        )
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


@dataclass(frozen=True)
class NotifyConfig:
    """How the notify stage decides and delivers.

    - `rules_path`: the TOML rules file; None → the default rule (high and critical, every
      camera, every configured channel).
    - `timezone`: the zone of the rules' schedules (TIMEZONE).
    - `public_base_url`: how users reach the API, for the links in alerts.
    - `camera_root`: where the email snapshot's picture is read from.
    - `send_attempts`, `backoff_base_seconds`, `backoff_cap_seconds`: tries of one delivery
      attempt on transient errors, with exponential backoff between them.
    - `send_timeout_seconds`: the most one try may take (a hard cap around the channel's own).
    - `claim_lease_seconds`: how long a claimed delivery counts as in flight. A claim older than
      that whose delivery was never recorded belongs to a process that stopped during the send:
      its outcome is unknown and it is not sent again. Keep it above
      `send_attempts × send_timeout_seconds` plus the backoff.
    - `state_ttl_seconds`: how long delivery states, plans and cooldowns are kept (the horizon of
      exactly-once: an analysis re-published later than that alerts again).
    - `late_after_seconds`: an event whose pictures reached HSI later than this after they were
      taken is late (`decisions.late_by`): its alerts say so; rules may skip it.
    - `max_age_seconds`: an event older than this (`decisions.too_old`: now minus when its
      newest picture was taken) is not alerted: `alert.skipped` is recorded instead. 0: no bound.
      Not below `late_after_seconds`, so that late events within the bound are still alerted.
    """

    rules_path: Path | None = None
    timezone: str | tzinfo = "UTC"
    public_base_url: str = "http://127.0.0.1:8000"
    camera_root: Path | None = None
    webhook: WebhookConfig | None = None
    email: EmailConfig | None = None
    mqtt: MqttConfig | None = None
    send_attempts: int = 3
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 5.0
    send_timeout_seconds: float = 30.0
    claim_lease_seconds: float = 180.0
    state_ttl_seconds: int = 7 * 24 * 3600
    snapshot_max_width: int = 1280
    late_after_seconds: float = 600.0
    max_age_seconds: float = 900.0

    def __post_init__(self) -> None:
        if self.send_attempts < 1:
            raise ValueError(f"send_attempts must be >= 1, got {self.send_attempts}")
        if self.send_timeout_seconds <= 0 or self.claim_lease_seconds <= 0:
            raise ValueError("send_timeout_seconds and claim_lease_seconds must be > 0")
        if self.max_age_seconds < 0 or (0 < self.max_age_seconds < self.late_after_seconds):
            raise ValueError(
                f"max_age_seconds must be 0 (no bound) or at least late_after_seconds "
                f"({self.late_after_seconds}), got {self.max_age_seconds}"
            )
        if self.state_ttl_seconds < 60:
            raise ValueError(f"state_ttl_seconds must be >= 60, got {self.state_ttl_seconds}")

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The channels that are configured, in a fixed order."""
        # Each channel's configuration is the field named after the channel.
        return tuple(name for name in CHANNELS if getattr(self, name) is not None)

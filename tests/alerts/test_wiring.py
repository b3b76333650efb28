"""Settings → the notify stage's config, and the pipeline refusing a bad setup before it starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hsi.app.pipeline import Pipeline, PipelineOptions
from hsi.settings import components
from hsi.settings.model import Settings
from streams.alerts import AlertConfigError, AlertRulesError
from streams.names import Group


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # settings-only kwarg


def test_no_channel_settings_no_channels() -> None:
    """Without webhook, SMTP or MQTT settings no channel is configured."""
    config = components.notify_config(_settings())
    assert config.channel_names == ()
    assert config.rules_path is None


def test_every_channel_from_settings(tmp_path: Path) -> None:
    """Each channel gets its settings; secrets are handed over as plain strings."""
    config = components.notify_config(
        _settings(
            default_webhook_url="https://hooks.example/hsi",
            webhook_secret="s3cret",
            webhook_timeout_seconds=2.5,
            smtp_host="mail.example",
            smtp_port=465,
            smtp_user="hsi",
            smtp_password="pw",
            smtp_from_address="hsi@example.org",
            default_email_recipients="a@example.org,b@example.org",
            smtp_use_tls=True,
            mqtt_url="mqtt://ha:pw@broker.lan:1884",
            alerts_allow_plaintext=True,
            alert_rules_path=tmp_path / "rules.toml",
            timezone="Europe/Berlin",
            public_base_url="https://hsi.example/",
        )
    )
    assert config.channel_names == ("webhook", "email", "mqtt")
    assert config.webhook is not None
    assert (config.webhook.secret, config.webhook.timeout_seconds) == ("s3cret", 2.5)
    assert config.email is not None
    assert config.email.recipients == ("a@example.org", "b@example.org")
    assert (config.email.use_tls, config.email.use_starttls) == (True, False)  # SMTPS wins
    assert config.email.password == "pw"
    assert config.mqtt is not None
    assert config.mqtt.url == "mqtt://ha:pw@broker.lan:1884"
    assert config.rules_path == tmp_path / "rules.toml"
    assert config.timezone == "Europe/Berlin"
    assert config.public_base_url == "https://hsi.example"


def test_public_base_url_defaults_to_the_api_address() -> None:
    """Without PUBLIC_BASE_URL the links point at API_HOST:API_PORT."""
    settings = _settings(api_host="192.168.1.5", api_port=8080)
    assert components.public_base_url(settings) == "http://192.168.1.5:8080"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"smtp_host": "mail.example"}, "SMTP_FROM_ADDRESS, DEFAULT_EMAIL_RECIPIENTS are not set"),
        (
            {"smtp_host": "m", "smtp_from_address": "a@b.c"},
            "DEFAULT_EMAIL_RECIPIENTS is not set",
        ),
        ({"mqtt_url": "tcp://broker:1883"}, "use mqtt://host:1883"),
    ],
)
def test_incomplete_channel_settings_are_refused(values: dict[str, Any], message: str) -> None:
    """A partial e-mail setup or a bad MQTT URL names what to fix."""
    with pytest.raises(AlertConfigError, match=message):
        components.notify_config(_settings(**values))


def test_pipeline_refuses_a_bad_rules_file_before_starting(tmp_path: Path) -> None:
    """NOTIFICATION_ENABLED with a broken rules file, or no channel, stops HSI at once."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "x"\nmin_level = "urgent"\n', encoding="utf-8")
    options = PipelineOptions(stages=(Group.NOTIFY,))
    broken = _settings(
        notification_enabled=True, default_webhook_url="https://h/x", alert_rules_path=rules
    )
    with pytest.raises(AlertRulesError, match="field 'min_level': 'urgent'"):
        Pipeline(broken, "redis://127.0.0.1:1", options)
    with pytest.raises(AlertConfigError, match="no channel is configured"):
        Pipeline(_settings(notification_enabled=True), "redis://127.0.0.1:1", options)

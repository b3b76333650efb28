"""Settings: sources, normalization and readable validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsi.settings.masking import mask_url_password
from hsi.settings.model import (
    RUNTIME_ENV_VAR,
    Settings,
    SettingsError,
    load_settings,
    normalize_database_url,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from defaults: no HSI variables, no .env in the working directory."""
    for name in [*Settings.model_fields, RUNTIME_ENV_VAR, "NEMOTRON_URL"]:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_use_embedded_servers() -> None:
    """With nothing set, both URLs are unset and the embedded servers are meant."""
    settings = load_settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.uses_embedded_postgres
    assert settings.uses_embedded_redis
    assert settings.camera_root == Path(".hsi") / "cameras"
    assert settings.dedupe_ttl == 30 * 86_400
    assert (
        settings.severity_low_max,
        settings.severity_medium_max,
        settings.severity_high_max,
    ) == (
        29,
        59,
        84,
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/hsi", "postgresql+psycopg://u:p@db:5432/hsi"),
        ("postgresql://u@db/hsi", "postgresql+psycopg://u@db/hsi"),
        ("postgresql+asyncpg://u@db/hsi", "postgresql+psycopg://u@db/hsi"),
        ("postgresql+psycopg://u@db/hsi", "postgresql+psycopg://u@db/hsi"),
        ("POSTGRESQL://u@db/hsi", "postgresql+psycopg://u@db/hsi"),
    ],
)
def test_database_url_is_normalized_to_psycopg(given: str, expected: str) -> None:
    """Every PostgreSQL spelling becomes the async psycopg 3 driver."""
    assert normalize_database_url(given) == expected


def test_environment_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower-case variable names work as well as upper-case ones."""
    monkeypatch.setenv("batch_window_seconds", "120")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/hsi")
    settings = load_settings()
    assert settings.batch_window_seconds == 120
    assert settings.database_url == "postgresql+psycopg://u:p@db/hsi"


def test_lists_accept_commas_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """List settings take `a,b` or a JSON list; dict settings take JSON."""
    monkeypatch.setenv("CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("FAST_PATH_OBJECT_TYPES", '["person", "dog"]')
    monkeypatch.setenv("DETECTION_CLASS_THRESHOLDS", '{"car": 0.6}')
    settings = load_settings()
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.fast_path_object_types == ["person", "dog"]
    assert settings.detection_class_thresholds == {"car": 0.6}


def test_sources_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Environment beats the runtime file, which beats .env, which beats defaults."""
    (tmp_path / ".env").write_text("RETENTION_DAYS=10\nBATCH_WINDOW_SECONDS=100\nAPI_PORT=9001\n")
    runtime = tmp_path / "runtime.env"
    runtime.write_text("BATCH_WINDOW_SECONDS=110\nAPI_PORT=9002\n")
    monkeypatch.setenv(RUNTIME_ENV_VAR, str(runtime))
    monkeypatch.setenv("API_PORT", "9003")
    settings = load_settings()
    assert settings.retention_days == 10
    assert settings.batch_window_seconds == 110
    assert settings.api_port == 9003


def test_missing_runtime_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime file that does not exist is reported, not ignored."""
    monkeypatch.setenv(RUNTIME_ENV_VAR, "nowhere/runtime.env")
    with pytest.raises(SettingsError, match=RUNTIME_ENV_VAR):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "BATCH_WINDOW_SECONDS",
            "soon",
            "BATCH_WINDOW_SECONDS='soon': Input should be a valid number",
        ),
        ("API_PORT", "70000", "API_PORT='70000': Input should be less than or equal to 65535"),
        (
            "DETECTOR_BACKEND",
            "yolo",
            "DETECTOR_BACKEND='yolo': Input should be 'embedded' or 'rtdetr'",
        ),
        ("REDIS_URL", "http://u:hunter2@h", "REDIS_URL='http://u:***@h': expected redis://"),
        (
            "DATABASE_URL",
            "mysql://u:hunter2@h/db",
            "DATABASE_URL='mysql://u:***@h/db': scheme 'mysql'",
        ),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': Input should be 'plain' or 'json'"),
        ("DETECTION_CONFIDENCE_THRESHOLD", "1.5", "DETECTION_CONFIDENCE_THRESHOLD='1.5'"),
        ("STREAM_PREFIX", "Bad Prefix", "STREAM_PREFIX='Bad Prefix'"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """A bad value names the variable, shows the value (password masked) and what is accepted."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SEVERITY_LOW_MAX": "70"}, "severity thresholds must rise"),
        ({"BATCH_IDLE_TIMEOUT_SECONDS": "200"}, "BATCH_IDLE_TIMEOUT_SECONDS must not exceed"),
        ({"TLS_MODE": "provided"}, "TLS_MODE=provided needs TLS_CERT_PATH"),
        ({"TLS_VERIFY_CLIENT": "true"}, "TLS_VERIFY_CLIENT=true needs TLS_CA_PATH"),
        ({"API_KEYS": "too-short"}, "an API key needs at least 32"),
        ({"ALERT_MAX_AGE_SECONDS": "300"}, "is below ALERT_LATE_AFTER_SECONDS"),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    """Settings that contradict each other are refused with the rule that was broken."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_the_alert_age_bound_may_be_off_or_at_least_the_lateness_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ALERT_MAX_AGE_SECONDS is 900 by default, 0 turns it off, and it may equal the lateness."""
    assert load_settings().alert_max_age_seconds == 900.0
    monkeypatch.setenv("ALERT_MAX_AGE_SECONDS", "0")
    assert load_settings().alert_max_age_seconds == 0.0
    monkeypatch.setenv("ALERT_MAX_AGE_SECONDS", "600")
    assert load_settings().alert_max_age_seconds == 600.0


def test_secrets_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """API keys, passwords and URL credentials never appear in the masked view or errors."""
    monkeypatch.setenv("API_KEY_ENABLED", "true")
    monkeypatch.setenv(
        "API_KEYS", "k-one-secret-0123456789abcdefghijk,k-two-secret-0123456789abcdefghijk"
    )
    monkeypatch.setenv("LLM_API_KEY", "sk-very-secret")
    monkeypatch.setenv("SMTP_PASSWORD", "mail-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://hsi:db-secret@db/hsi")
    settings = load_settings()
    shown = str(settings.masked())
    for secret in ("k-one-secret", "k-two-secret", "sk-very-secret", "mail-secret", "db-secret"):
        assert secret not in shown
    assert settings.masked()["api_keys"] == ["***", "***"]
    assert settings.api_keys[0].get_secret_value().startswith("k-one-secret")
    monkeypatch.setenv("SMTP_PORT", "not-a-port")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "db-secret" not in str(caught.value)


def test_nemotron_url_is_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """NEMOTRON_URL sets the LLM URL too."""
    monkeypatch.setenv("NEMOTRON_URL", "http://gpu-box:8080")
    assert load_settings().llm_url == "http://gpu-box:8080"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://user:pw@h/db", "postgresql://user:***@h/db"),
        ("redis://h:6379", "redis://h:6379"),
        ("postgresql://user@h/db", "postgresql://user@h/db"),
        ("https://ghp_TOKEN1234567890abcd@hooks.example/x", "https://***@hooks.example/x"),
        (
            "https://hooks.slack.com/services/T0001/B0002/XyZ123abcDEF456ghiJKL789",
            "https://hooks.slack.com/services/T0001/B0002/***",
        ),
        (
            "https://ha.local/api/webhook/hsi?token=s3cret&camera=front",
            "https://ha.local/api/webhook/hsi?token=***&camera=front",
        ),
        ("http://gpu:8091/v1?api_key=abc", "http://gpu:8091/v1?api_key=***"),
        ("http://127.0.0.1:8091", "http://127.0.0.1:8091"),
        ("http://gpu:8091/v1/chat/completions", "http://gpu:8091/v1/chat/completions"),
        ("mqtts://hsi:pw@broker:8883", "mqtts://hsi:***@broker:8883"),
    ],
)
def test_mask_url_password(url: str, masked: str) -> None:
    """URL credentials are masked and the rest is kept: passwords, a bare token as the user of
    an http(s) URL, credential-like query values and token-like path segments (webhooks)."""
    assert mask_url_password(url) == masked


def test_cors_wildcard_with_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any origin may not read the API with a visitor's credentials."""
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "true")
    with pytest.raises(SettingsError, match="CORS_ALLOW_CREDENTIALS=true with CORS_ORIGINS="):
        load_settings()
    monkeypatch.setenv("CORS_ORIGINS", "https://home.example")
    assert load_settings().cors_origins == ["https://home.example"]


def test_the_api_believes_forwarded_headers_from_the_configured_proxies_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FORWARDED_ALLOW_IPS is HSI's setting (default loopback) and reaches the app as given; the
    app reads X-Forwarded-* itself (uvicorn's own reading is off)."""
    from hsi.app.runner import UpOptions, _api_server
    from hsi.infra.redis import RedisConfig
    from hsi.settings import components

    redis = RedisConfig(url="redis://127.0.0.1:6379/0")
    server, _, _ = _api_server(load_settings(), "postgresql://u@h/db", redis, UpOptions())
    assert server.config.proxy_headers is False
    config = components.api_config(load_settings(), database_url="postgresql://u@h/db", redis=redis)
    assert config.forwarded_allow_ips == ("127.0.0.1",)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5,10.0.0.6")
    config = components.api_config(load_settings(), database_url="postgresql://u@h/db", redis=redis)
    assert config.forwarded_allow_ips == ("10.0.0.5", "10.0.0.6")


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"DEFAULT_WEBHOOK_URL": "http://ha.lan:8123/api/webhook/x"}, "DEFAULT_WEBHOOK_URL"),
        ({"DEFAULT_WEBHOOK_URL": "https://ha.lan:8123/api/webhook/x"}, None),
        ({"DEFAULT_WEBHOOK_URL": "http://127.0.0.1:8123/hook"}, None),  # never leaves the host
        (
            {"SMTP_HOST": "mail.lan", "SMTP_USER": "u", "SMTP_USE_STARTTLS": "false"},
            "SMTP_USER",
        ),
        ({"SMTP_HOST": "mail.lan", "SMTP_USER": "u"}, None),  # STARTTLS by default
        ({"SMTP_HOST": "mail.lan", "SMTP_USE_STARTTLS": "false"}, None),  # no login to read
        ({"MQTT_URL": "mqtt://hsi:pw@broker.lan:1883"}, "MQTT_URL"),
        ({"MQTT_URL": "mqtts://hsi:pw@broker.lan:8883"}, None),
        ({"MQTT_URL": "mqtt://broker.lan:1883"}, None),
        ({"MQTT_URL": "mqtt://hsi:pw@localhost:1883"}, None),
    ],
)
def test_plaintext_alert_channels_need_an_opt_in(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], refused: str | None
) -> None:
    """Alerts and channel passwords cross the network readable only with ALERTS_ALLOW_PLAINTEXT."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if refused is None:
        load_settings()
        return
    with pytest.raises(SettingsError, match=refused) as caught:
        load_settings()
    assert "ALERTS_ALLOW_PLAINTEXT" in str(caught.value)
    assert "pw@" not in str(caught.value)
    monkeypatch.setenv("ALERTS_ALLOW_PLAINTEXT", "true")
    load_settings()

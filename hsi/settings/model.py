"""HSI settings: one pydantic-settings model, read from the environment, `.env` and a runtime file.

Sources, strongest first: environment variables (case-insensitive), the file named by
`HSI_RUNTIME_ENV_PATH`, `.env` in the working directory, the defaults below. An unset
`DATABASE_URL` or `REDIS_URL` means "start and use the embedded servers under `DATA_DIR`".

`load_settings()` turns pydantic's validation errors into one `SettingsError` whose lines name the
environment variable, the offending value (masked for secrets) and what is accepted (see
`hsi.settings.masking`).
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hsi.api.keys import is_loopback, key_problem
from hsi.ftp.config import check_accounts, parse_accounts, parse_port_range
from hsi.settings.masking import format_errors, masked_values

RUNTIME_ENV_VAR = "HSI_RUNTIME_ENV_PATH"


class SettingsError(ValueError):
    """The configuration cannot be used; the message lists every bad variable and the fix."""


class DetectorBackend(StrEnum):
    EMBEDDED = "embedded"
    RTDETR = "rtdetr"


# Chosen on the accuracy benchmark (B7, motion mode): the lowest thresholds that put no false
# person or cat on its 50 empty frames; below the confirmation bar, a label must be seen in two
# files of a batch to count (`streams.confirmation`).
CLASS_THRESHOLDS: dict[str, float] = {"person": 0.4, "cat": 0.35}


class DetectionMode(StrEnum):
    FULL = "full"
    TILES = "tiles"
    MOTION = "motion"


class AnalyzerBackend(StrEnum):
    RULES = "rules"
    LLM = "llm"


class TLSMode(StrEnum):
    DISABLED = "disabled"
    SELF_SIGNED = "self_signed"
    PROVIDED = "provided"


def normalize_database_url(url: str) -> str:
    """Map any PostgreSQL URL spelling onto SQLAlchemy's async psycopg 3 driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as postgresql://user:password@host:5432/hsi")
    base = scheme.split("+", 1)[0].lower()
    if base not in ("postgres", "postgresql"):
        raise ValueError(f"scheme {scheme!r} is not PostgreSQL; use postgresql://…")
    return f"postgresql+psycopg://{rest}"


def _split_list(value: Any) -> Any:
    """Accept a comma-separated string as well as a JSON list for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every HSI setting. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
    )

    # --- application -------------------------------------------------------------------------
    app_name: str = "HSI"
    environment: Literal["development", "production", "test"] = "development"
    data_dir: Path = Field(
        Path(".hsi"),
        description="Folder for embedded servers, certificates, thumbnails and logs.",
    )

    timezone: str | None = Field(
        None, description="IANA zone for time-of-day rules (e.g. Europe/Berlin); default: local."
    )

    # --- PostgreSQL --------------------------------------------------------------------------
    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset starts the embedded PostgreSQL."
    )
    database_pool_size: int = Field(10, ge=1, le=200)
    database_pool_max_overflow: int = Field(20, ge=0, le=500)
    database_pool_timeout_seconds: float = Field(30.0, gt=0)
    database_pool_recycle_seconds: int = Field(1800, ge=-1)
    database_echo: bool = False

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str | None = Field(None, description="Redis URL; unset starts the embedded Valkey.")
    redis_cluster: bool = Field(False, description="Speak the Redis Cluster protocol.")
    redis_max_connections: int = Field(64, ge=2, le=10_000)
    redis_socket_timeout_seconds: float = Field(10.0, gt=0)
    redis_connect_timeout_seconds: float = Field(5.0, gt=0)
    redis_health_check_interval_seconds: int = Field(30, ge=0)
    redis_retry_attempts: int = Field(5, ge=0, le=100)
    redis_retry_backoff_base_seconds: float = Field(0.05, gt=0)
    redis_retry_backoff_cap_seconds: float = Field(2.0, gt=0)
    stream_prefix: str = Field(
        "hsi", pattern=r"^[a-z0-9_-]{1,32}$", description="First part of every Redis key."
    )

    # --- API ---------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    thumbnail_concurrency: int = Field(
        2, ge=1, le=64, description="Thumbnails rendered at once; more requests wait."
    )
    search_language: str = Field(
        "english",
        pattern=r"^[a-z_]{1,63}$",
        description="PostgreSQL text search configuration of event search (`GET /api/events?q=`): "
        "the language of the summaries (english, german, french, simple, ...; psql's \\dF "
        "lists them). english uses the stored, indexed search document; "
        "another computes it for each event a search looks at.",
    )
    forwarded_allow_ips: CsvList = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Proxies whose X-Forwarded-For/-Proto (the client address for rate limits "
        "and logs) and X-Request-ID the API believes: addresses or networks. Never * unless only "
        "trusted proxies can reach the API.",
    )
    cors_origins: CsvList = Field(default_factory=list)
    cors_allow_credentials: bool = False
    api_key_enabled: bool | None = Field(
        None,
        description="Require an API key. Unset: required when the API listens beyond loopback "
        "(API_HOST not 127.0.0.1/::1); without API_KEYS one is then generated under DATA_DIR "
        "(`hsi api-key` prints it). false on a public address only behind an authenticating proxy.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted keys, comma-separated (several to rotate); 32 characters or more.",
    )
    api_metrics_open: bool = Field(
        False,
        description="Serve /metrics without the API key (for a scraper on a network that only "
        "trusted hosts reach).",
    )
    public_base_url: str | None = Field(
        None, description="How users reach the API (links in alerts); default from host/port."
    )

    # --- cameras and watcher -----------------------------------------------------------------
    foscam_base_path: Path | None = Field(
        None, description="Camera root: one folder per camera. Default: DATA_DIR/cameras."
    )
    watch_polling: bool = Field(False, description="Poll instead of inotify (network shares).")
    watch_poll_interval_seconds: float = Field(2.0, gt=0)
    watch_stable_seconds: float = Field(
        1.0, gt=0, description="A file must keep its size this long before it is read."
    )
    watch_incomplete_timeout_seconds: float = Field(
        120.0, gt=0, description="How long a file that does not decode is waited for."
    )
    min_image_size_bytes: int = Field(1024, ge=0)
    min_video_size_bytes: int = Field(10_240, ge=0)
    max_image_size_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Larger images are refused, never read."
    )
    max_video_size_bytes: int = Field(
        4 * 1024**3, ge=10_240, description="Larger videos are refused, never read."
    )

    # --- FTP receiver ------------------------------------------------------------------------
    ftp_enabled: bool = Field(
        False, description="Serve FTP so cameras upload straight into their folders."
    )
    ftp_host: str = Field("0.0.0.0", description="Address the FTP receiver listens on.")
    ftp_port: int = Field(2121, ge=0, le=65535, description="FTP control port.")
    ftp_passive_ports: str | None = Field(
        "60000-60100",
        description="Passive data ports LOW-HIGH (open them in a firewall); empty: any port.",
    )
    ftp_accounts: SecretStr | None = Field(
        None,
        description=(
            "One login per camera: user:password:folder,… or JSON "
            '{"user": {"password": "…", "folder": "Front Door"}}; folders are under the '
            "camera root."
        ),
    )
    ftp_max_upload_mb: int = Field(
        200, ge=1, le=100_000, description="Larger uploads are aborted and deleted."
    )
    ftp_require_tls: bool = Field(
        False, description="Refuse unencrypted FTP logins and transfers (needs TLS_MODE)."
    )
    ftp_masquerade_address: str | None = Field(
        None, description="IPv4 address announced in passive replies (behind NAT or Docker)."
    )
    ftp_allow_overwrite: bool = Field(
        False, description="Let a camera replace an existing file (cameras reusing one name)."
    )
    ftp_quota_mb_per_day: int = Field(
        20_000,
        ge=0,
        description="Upload megabytes per camera account and UTC day, then 552; 0: no limit.",
    )
    ftp_quota_files_per_day: int = Field(
        20_000, ge=0, description="Uploads per camera account and UTC day, then 552; 0: no limit."
    )
    ftp_max_connections_per_ip: int = Field(
        8,
        ge=0,
        description="FTP connections one address may hold (cameras behind NAT share one); 0: any.",
    )
    ftp_login_timeout_seconds: float = Field(
        30.0, gt=0, description="Seconds a new FTP connection has to log in before it is closed."
    )
    ftp_ban_after_failures: int = Field(
        10,
        ge=0,
        description="Wrong FTP logins from one address within the window that ban it; 0: never.",
    )
    ftp_ban_window_seconds: float = Field(
        600.0, gt=0, description="The window in which failed FTP logins are counted."
    )
    ftp_ban_seconds: float = Field(
        900.0, gt=0, description="How long a banned address is refused (421) at connect."
    )

    # --- retention ---------------------------------------------------------------------------
    retention_days: int = Field(30, ge=1, le=3650)
    retention_delete_media: bool = False
    retention_interval_seconds: int = Field(3600, ge=60)
    retention_rules_path: Path | None = Field(
        None,
        description="TOML file of retention rules: a camera's own `days` for its rows and stream "
        "entries, media files deleted earlier by risk level (needs RETENTION_DELETE_MEDIA=true). "
        "Unset: RETENTION_DAYS for everything. See docs/operations.md, Retention.",
    )

    # --- batching ----------------------------------------------------------------------------
    batch_window_seconds: float = Field(90.0, gt=0)
    batch_idle_timeout_seconds: float = Field(30.0, gt=0)
    batch_max_detections: int = Field(50, ge=1)
    batch_clock_tolerance_seconds: float = Field(
        300.0,
        ge=0,
        description="A file is batched by when it was taken, unless that lies more than this "
        "after it arrived (a camera clock running fast): then by when it arrived.",
    )
    fast_path_enabled: bool = True
    fast_path_confidence_threshold: float = Field(0.90, ge=0, le=1)
    fast_path_object_types: CsvList = Field(default_factory=lambda: ["person"])

    # --- detection ---------------------------------------------------------------------------
    detector_backend: DetectorBackend = DetectorBackend.EMBEDDED
    rtdetr_url: str = "http://127.0.0.1:8090"
    detection_confidence_threshold: float = Field(0.5, ge=0, le=1)
    detection_class_thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(CLASS_THRESHOLDS),
        description='Per-class thresholds, JSON: {"car": 0.6}; the defaults come from the '
        "accuracy benchmark (benchmarks/README.md, B7).",
    )
    zones_path: Path | None = Field(
        None,
        description="TOML file of zones per camera (ignore: objects there are dropped; tag: "
        "objects there are tagged); read at start, so a changed file applies to new files.",
    )
    detection_confirm_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="An object whose label is in one file of a batch only counts from this "
        "confidence; in two or more files, the detection threshold is enough.",
    )
    detection_confirm_class_thresholds: dict[str, float] = Field(
        default_factory=dict, description='Per-class confirmation bars, JSON: {"person": 0.55}.'
    )
    detector_connect_timeout_seconds: float = Field(5.0, gt=0)
    detector_read_timeout_seconds: float = Field(30.0, gt=0)
    detector_max_concurrency: int = Field(4, ge=1, le=256)
    detector_threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Embedded: inferences at once, one core each. Default: every core.",
    )
    detection_mode: DetectionMode = Field(
        DetectionMode.MOTION,
        description="Embedded: full frame only; plus overlapping tiles; or plus crops where the "
        "picture changed since the camera's previous one (tiles when there is none).",
    )
    detection_tile_size: int = Field(
        640, ge=416, le=4096, description="Embedded: side of a tile in frame pixels."
    )
    detection_motion_regions: int = Field(
        2, ge=0, le=16, description="Embedded: crops around changes per frame, at most."
    )

    # --- analysis ----------------------------------------------------------------------------
    analyzer_backend: AnalyzerBackend = AnalyzerBackend.RULES
    llm_url: str = Field(
        "http://127.0.0.1:8091",
        validation_alias=AliasChoices("llm_url", "nemotron_url"),
        description="OpenAI-compatible server (llama.cpp, vLLM, Ollama).",
    )
    llm_model: str = "nemotron"
    llm_api_key: SecretStr | None = None
    llm_connect_timeout_seconds: float = Field(5.0, gt=0)
    llm_read_timeout_seconds: float = Field(120.0, gt=0)
    llm_max_tokens: int = Field(1024, ge=16)
    llm_temperature: float = Field(0.1, ge=0, le=2)
    llm_json_schema: bool = Field(True, description="Ask the server for schema-constrained JSON.")

    # --- AI service resilience ---------------------------------------------------------------
    ai_max_retries: int = Field(3, ge=0, le=20)
    ai_retry_backoff_seconds: float = Field(0.5, ge=0)
    ai_circuit_failure_threshold: int = Field(5, ge=1)
    ai_circuit_reset_seconds: float = Field(30.0, gt=0)
    ai_max_response_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Longer detector/LLM answers are refused unread."
    )

    # --- streams -----------------------------------------------------------------------------
    stream_reclaim_idle_ms: int = Field(60_000, ge=100)
    stream_reclaim_interval_seconds: float = Field(5.0, gt=0)
    stream_max_deliveries: int = Field(5, ge=1, le=1000)
    stream_read_count: int = Field(100, ge=1, le=10_000)
    stream_block_ms: int = Field(1000, ge=1)
    dedupe_ttl_seconds: int | None = Field(
        None, ge=60, description="How long a content hash is remembered. Default: retention."
    )

    # --- rate limits and live feed -----------------------------------------------------------
    rate_limit_enabled: bool = True
    rate_limit_requests_per_minute: int = Field(600, ge=1)
    rate_limit_media_requests_per_minute: int = Field(1200, ge=1)
    rate_limit_live_connections_per_client: int = Field(5, ge=1)
    live_max_connections: int = Field(100, ge=1)
    live_heartbeat_seconds: float = Field(15.0, gt=0)
    live_idle_timeout_seconds: float = Field(3600.0, gt=0)

    # --- severity ----------------------------------------------------------------------------
    severity_low_max: int = Field(29, ge=0, le=100)
    severity_medium_max: int = Field(59, ge=0, le=100)
    severity_high_max: int = Field(84, ge=0, le=100)

    # --- TLS ---------------------------------------------------------------------------------
    tls_mode: TLSMode = TLSMode.DISABLED
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_ca_path: Path | None = None
    tls_verify_client: bool = False
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    tls_hostnames: CsvList = Field(default_factory=lambda: ["localhost"])
    tls_ip_addresses: CsvList = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    tls_cert_days: int = Field(825, ge=1, le=3650)

    # --- notifications -----------------------------------------------------------------------
    notification_enabled: bool = False
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from_address: str | None = None
    smtp_use_tls: bool = False
    smtp_use_starttls: bool = True
    default_webhook_url: str | None = None
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_secret: SecretStr | None = None
    default_email_recipients: CsvList = Field(default_factory=list)
    mqtt_url: str | None = None
    alerts_allow_plaintext: bool = Field(
        False,
        description="Allow an http:// webhook, an SMTP login without TLS or STARTTLS, and an "
        "mqtt:// URL with a password to a host other than loopback (alerts and passwords then "
        "cross the network readable).",
    )
    alert_rules_path: Path | None = Field(
        None, description="TOML file of alert rules; unset: high and critical, every channel."
    )
    alert_send_attempts: int = Field(
        3, ge=1, le=10, description="Quick tries of one alert delivery on transient errors."
    )
    alert_retry_backoff_seconds: float = Field(
        0.5, gt=0, description="First pause between those tries (doubling, capped at 5 s)."
    )
    alert_claim_lease_seconds: float = Field(
        180.0,
        gt=0,
        description="A delivery claimed longer ago than this and never recorded counts as "
        "maybe sent and is not sent again.",
    )
    alert_state_ttl_days: int = Field(
        7, ge=1, le=365, description="How long an event's alerts are remembered (exactly once)."
    )
    alert_late_after_seconds: float = Field(
        600.0,
        ge=0,
        description="An event whose pictures reached HSI later than this after they were taken "
        "is late: its alerts say so, and rules with skip_late send none.",
    )
    alert_max_age_seconds: float = Field(
        900.0,
        ge=0,
        description="No alert for an event older than this (now minus when its newest picture "
        "was taken): alert.skipped is recorded instead, so a backlog, a replay or files seen "
        "again after Redis lost its data never alert. 0: no bound; else at least "
        "ALERT_LATE_AFTER_SECONDS.",
    )
    mqtt_topic_prefix: str = Field(
        "hsi", description="MQTT topics <prefix>/<camera>/event and …/last_event."
    )

    # --- re-analysis -------------------------------------------------------------------------
    reanalysis_max_tokens: int = Field(
        2_000_000,
        ge=0,
        description="The LLM tokens (prompt and completion) one `hsi reanalyze` run may spend "
        "before it ends over budget, unless --max-tokens says otherwise; 0: no bound.",
    )
    reanalysis_concurrency: int = Field(
        2, ge=1, le=64, description="Analyses a `hsi reanalyze` run makes at once."
    )
    mqtt_discovery_prefix: str = Field(
        "homeassistant", description="Home Assistant's MQTT discovery prefix."
    )

    # --- video -------------------------------------------------------------------------------
    video_frame_interval_seconds: float = Field(2.0, gt=0)
    video_max_frames: int = Field(10, ge=1, le=1000)
    video_max_duration_seconds: float = Field(600.0, gt=0)
    thumbnail_max_width: int = Field(640, ge=64, le=4096)
    thumbnail_jpeg_quality: int = Field(85, ge=10, le=100)
    export_max_mb: int = Field(
        2048,
        ge=1,
        description="Largest evidence export (`hsi export`, /api/events/{id}/export), in MB of "
        "original files; a larger one is refused before it starts.",
    )
    export_picture_max_width: int = Field(
        1920, ge=64, le=16384, description="Width of an export's pictures with boxes drawn."
    )

    # --- logging and telemetry ---------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["plain", "json"] = "plain"
    log_file: Path | None = None
    log_file_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    log_file_backup_count: int = Field(5, ge=0)
    log_db_enabled: bool = False
    log_db_min_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "hsi"
    otel_traces_sampler_ratio: float = Field(1.0, ge=0, le=1)
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the own /metrics of `hsi worker` and `hsi watch` (on API_HOST); "
        "0: off. `hsi up` serves /metrics on the API port.",
    )

    # --- validators --------------------------------------------------------------------------
    @field_validator(
        "cors_origins",
        "forwarded_allow_ips",
        "fast_path_object_types",
        "tls_hostnames",
        "tls_ip_addresses",
        "default_email_recipients",
        "api_keys",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for number, key in enumerate(value, 1):
            problem = key_problem(key.get_secret_value())
            if problem:
                raise ValueError(
                    f"key {number} {problem}; make one with `hsi api-key --new` (or leave API_KEYS "
                    "empty and HSI generates one)"
                )
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return normalize_database_url(str(value).strip())

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if not text.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://host:6379/0, rediss://… or unix:///path")
        return text

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone such as Europe/Berlin or UTC") from None
        return value.strip()

    @field_validator("detection_class_thresholds", "detection_confirm_class_thresholds")
    @classmethod
    def _class_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for label, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {label!r} must be between 0 and 1")
        return value

    @field_validator("ftp_accounts")
    @classmethod
    def _ftp_accounts(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        # raises FTPConfigError (a ValueError); never shows a password
        check_accounts(parse_accounts(value))
        return value

    @field_validator("ftp_passive_ports")
    @classmethod
    def _ftp_passive_ports(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_port_range(value)
        return value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.severity_low_max < self.severity_medium_max < self.severity_high_max:
            raise ValueError(
                "severity thresholds must rise: SEVERITY_LOW_MAX < SEVERITY_MEDIUM_MAX < "
                f"SEVERITY_HIGH_MAX (got {self.severity_low_max}, {self.severity_medium_max}, "
                f"{self.severity_high_max})"
            )
        if 0 < self.alert_max_age_seconds < self.alert_late_after_seconds:
            raise ValueError(
                f"ALERT_MAX_AGE_SECONDS ({self.alert_max_age_seconds}) is below "
                f"ALERT_LATE_AFTER_SECONDS ({self.alert_late_after_seconds}): late events would "
                "never be alerted, only skipped. Raise it to at least ALERT_LATE_AFTER_SECONDS, "
                "or set 0 for no bound"
            )
        if self.batch_idle_timeout_seconds > self.batch_window_seconds:
            raise ValueError("BATCH_IDLE_TIMEOUT_SECONDS must not exceed BATCH_WINDOW_SECONDS")
        if self.tls_mode is TLSMode.PROVIDED and not (self.tls_cert_path and self.tls_key_path):
            raise ValueError("TLS_MODE=provided needs TLS_CERT_PATH and TLS_KEY_PATH")
        if self.tls_verify_client and self.tls_ca_path is None:
            raise ValueError("TLS_VERIFY_CLIENT=true needs TLS_CA_PATH (the CA clients present)")
        if self.ftp_enabled and self.ftp_accounts is None:
            raise ValueError(
                "FTP_ENABLED=true needs FTP_ACCOUNTS: one user:password:folder per camera"
            )
        if self.ftp_require_tls and self.tls_mode is TLSMode.DISABLED:
            raise ValueError("FTP_REQUIRE_TLS=true needs TLS_MODE=self_signed or provided")
        if not self.alerts_allow_plaintext:
            problems = plaintext_alerts(self)
            if problems:
                raise ValueError(
                    "; ".join(problems) + ": use https://, SMTP_USE_STARTTLS/SMTP_USE_TLS or "
                    "mqtts://, or set ALERTS_ALLOW_PLAINTEXT=true to send them readable"
                )
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "CORS_ALLOW_CREDENTIALS=true with CORS_ORIGINS=* would let any web page read the "
                "API with a visitor's credentials; list the dashboard's origins instead"
            )
        return self

    # --- derived values ----------------------------------------------------------------------
    @property
    def camera_root(self) -> Path:
        return self.foscam_base_path or self.data_dir / "cameras"

    @property
    def dedupe_ttl(self) -> int:
        return self.dedupe_ttl_seconds or self.retention_days * 86_400

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    def masked(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets and URL passwords masked."""
        return masked_values(self.model_dump(mode="json"))


def plaintext_alerts(settings: Settings) -> list[str]:
    """The alert channels that would send alerts or passwords readable across the network."""
    problems = []
    webhook = urlsplit(settings.default_webhook_url or "")
    if webhook.scheme == "http" and not is_loopback(webhook.hostname or ""):
        problems.append("DEFAULT_WEBHOOK_URL is http://")
    if (
        settings.smtp_user
        and not (settings.smtp_use_tls or settings.smtp_use_starttls)
        and not is_loopback(settings.smtp_host or "")
    ):
        problems.append("SMTP_USER logs in without TLS or STARTTLS")
    mqtt = urlsplit(settings.mqtt_url or "")
    if mqtt.scheme == "mqtt" and mqtt.password and not is_loopback(mqtt.hostname or ""):
        problems.append("MQTT_URL sends its password over mqtt://")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from every source; raise `SettingsError` with a readable message."""
    env_files: list[Path] = [Path(".env")]
    runtime = os.environ.get(RUNTIME_ENV_VAR)
    if runtime:
        runtime_path = Path(runtime)
        if not runtime_path.is_file():
            raise SettingsError(
                f"{RUNTIME_ENV_VAR}={runtime!r}: no such file; create it or unset the variable"
            )
        env_files.append(runtime_path)
    try:
        return Settings(_env_file=tuple(env_files), **overrides)
    except ValidationError as exc:
        raise SettingsError(format_errors(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The entry points' cached accessor; nothing below `hsi` calls it."""
    return load_settings()

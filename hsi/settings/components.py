"""Settings → the small frozen config of every component, in one place (STYLE: settings flow down).

Components never see `Settings`: the stages get `streams` configs, the shell's own parts (Redis,
PostgreSQL, TLS, telemetry, logs, FTP, API, dashboard) theirs, each built by a function here.
"""

from __future__ import annotations

import os
import socket
import tomllib
import uuid
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from hsi.api.config import APIConfig, LiveConfig, RateLimits
from hsi.api.export.plan import ExportConfig
from hsi.api.keys import keys_required
from hsi.ftp.config import MIB, FTPConfig, parse_accounts, parse_port_range
from hsi.infra.db import PoolConfig
from hsi.infra.redis import RedisConfig
from hsi.infra.telemetry import TelemetryConfig
from hsi.infra.tls import TLSConfig
from hsi.logs.setup import LoggingConfig
from hsi.settings.masking import mask_url_password
from hsi.settings.model import AnalyzerBackend, DetectorBackend
from hsi.web.config import AIBackend, WebConfig
from projections.errors import RetentionError
from projections.retention_rules import RetentionRules, parse_rules
from streams.alerts import (
    AlertConfigError,
    EmailConfig,
    MqttConfig,
    NotifyConfig,
    WebhookConfig,
)
from streams.alerts.config import parse_mqtt_url
from streams.analyzers.llm import LLMConfig
from streams.batching import BatchConfig
from streams.confirmation import Confirmation
from streams.detectors import DetectorConfig
from streams.names import StreamNames
from streams.reclaim import ReclaimConfig
from streams.severity import SeverityThresholds
from streams.stages.runtime import ConsumeConfig
from streams.watch.config import WatchConfig
from streams.zones import load_zones

if TYPE_CHECKING:
    from hsi.settings.model import Settings


def consumer_name(role: str = "worker") -> str:
    """Unique per process: host, pid and a short random part (pids repeat across containers)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}-{role}"


def stream_names(settings: Settings) -> StreamNames:
    return StreamNames(settings.stream_prefix)


def local_zone(settings: Settings) -> str | tzinfo:
    """The zone for time-of-day rules: TIMEZONE, else this machine's local zone."""
    if settings.timezone:
        return settings.timezone
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else "UTC"


def local_tzinfo(settings: Settings) -> tzinfo:
    zone = local_zone(settings)
    return ZoneInfo(zone) if isinstance(zone, str) else zone


def export_config(settings: Settings) -> ExportConfig:
    """What `hsi export` needs: the camera root, the size limit and the local zone."""
    return ExportConfig(
        camera_root=settings.camera_root,
        max_bytes=settings.export_max_mb * MIB,
        picture_max_width=settings.export_picture_max_width,
        jpeg_quality=max(settings.thumbnail_jpeg_quality, 90),
        zone=local_tzinfo(settings),
    )


def detector_config(settings: Settings) -> DetectorConfig:
    return DetectorConfig(
        backend=settings.detector_backend.value,
        rtdetr_url=settings.rtdetr_url,
        connect_timeout=settings.detector_connect_timeout_seconds,
        read_timeout=settings.detector_read_timeout_seconds,
        max_retries=settings.ai_max_retries,
        backoff_base=settings.ai_retry_backoff_seconds,
        circuit_failure_threshold=settings.ai_circuit_failure_threshold,
        circuit_reset_seconds=settings.ai_circuit_reset_seconds,
        max_concurrency=settings.detector_max_concurrency,
        threads=settings.detector_threads,
        mode=settings.detection_mode.value,
        tile_size=settings.detection_tile_size,
        motion_regions=settings.detection_motion_regions,
        confidence_threshold=settings.detection_confidence_threshold,
        class_thresholds=dict(settings.detection_class_thresholds),
        video_frame_interval_seconds=settings.video_frame_interval_seconds,
        video_max_frames=settings.video_max_frames,
        max_image_bytes=settings.max_image_size_bytes,
        max_response_bytes=settings.ai_max_response_bytes,
    )


def llm_config(settings: Settings) -> LLMConfig:
    return LLMConfig(
        base_url=settings.llm_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        connect_timeout_seconds=settings.llm_connect_timeout_seconds,
        read_timeout_seconds=settings.llm_read_timeout_seconds,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        json_schema=settings.llm_json_schema,
        max_retries=settings.ai_max_retries,
        retry_backoff_seconds=settings.ai_retry_backoff_seconds,
        circuit_failure_threshold=settings.ai_circuit_failure_threshold,
        circuit_reset_seconds=settings.ai_circuit_reset_seconds,
        max_response_bytes=settings.ai_max_response_bytes,
    )


def severity(settings: Settings) -> SeverityThresholds:
    return SeverityThresholds(
        low_max=settings.severity_low_max,
        medium_max=settings.severity_medium_max,
        high_max=settings.severity_high_max,
    )


def batch_config(settings: Settings) -> BatchConfig:
    return BatchConfig(
        window_seconds=settings.batch_window_seconds,
        idle_seconds=settings.batch_idle_timeout_seconds,
        max_detections=settings.batch_max_detections,
        fast_path_enabled=settings.fast_path_enabled,
        fast_path_threshold=settings.fast_path_confidence_threshold,
        fast_path_labels=frozenset(settings.fast_path_object_types),
        clock_tolerance_seconds=settings.batch_clock_tolerance_seconds,
    )


def confirmation(settings: Settings) -> Confirmation:
    return Confirmation(
        bar=settings.detection_confirm_threshold,
        class_bars=dict(settings.detection_confirm_class_thresholds),
    )


def reclaim_config(settings: Settings) -> ReclaimConfig:
    return ReclaimConfig(
        idle_ms=settings.stream_reclaim_idle_ms,
        max_deliveries=settings.stream_max_deliveries,
        batch_size=settings.stream_read_count,
        interval_seconds=settings.stream_reclaim_interval_seconds,
    )


def consume_config(settings: Settings) -> ConsumeConfig:
    return ConsumeConfig(read_count=settings.stream_read_count, block_ms=settings.stream_block_ms)


def public_base_url(settings: Settings) -> str:
    """How users reach the API (links in alerts): PUBLIC_BASE_URL, else from API_HOST/API_PORT
    (a wildcard bind address becomes this machine's host name)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = settings.api_host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    scheme = "http" if settings.tls_mode.value == "disabled" else "https"
    return f"{scheme}://{host}:{settings.api_port}"


def notify_config(settings: Settings) -> NotifyConfig:
    """The notify stage's config: a channel for each one whose settings are there.

    E-mail needs SMTP_HOST, SMTP_FROM_ADDRESS and DEFAULT_EMAIL_RECIPIENTS together; SMTP_USE_TLS
    (SMTPS) wins over SMTP_USE_STARTTLS. A bad MQTT_URL or a partial e-mail setup raises
    `AlertConfigError` naming the variables.
    """
    webhook = None
    if settings.default_webhook_url:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        webhook = WebhookConfig(
            url=settings.default_webhook_url,
            timeout_seconds=settings.webhook_timeout_seconds,
            secret=secret or None,
        )
    email = None
    smtp = {
        "SMTP_HOST": settings.smtp_host,
        "SMTP_FROM_ADDRESS": settings.smtp_from_address,
        "DEFAULT_EMAIL_RECIPIENTS": ",".join(settings.default_email_recipients),
    }
    if any(smtp.values()):
        missing = [name for name, value in smtp.items() if not value]
        if missing:
            raise AlertConfigError(
                f"e-mail alerts need SMTP_HOST, SMTP_FROM_ADDRESS and DEFAULT_EMAIL_RECIPIENTS; "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
            )
        email = EmailConfig(
            host=smtp["SMTP_HOST"] or "",
            port=settings.smtp_port,
            from_address=smtp["SMTP_FROM_ADDRESS"] or "",
            recipients=tuple(settings.default_email_recipients),
            user=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            use_tls=settings.smtp_use_tls,
            use_starttls=settings.smtp_use_starttls and not settings.smtp_use_tls,
        )
    mqtt = None
    if settings.mqtt_url:
        try:
            parse_mqtt_url(settings.mqtt_url)
        except ValueError as exc:
            raise AlertConfigError(str(exc)) from None
        mqtt = MqttConfig(
            url=settings.mqtt_url,
            topic_prefix=settings.mqtt_topic_prefix,
            discovery_prefix=settings.mqtt_discovery_prefix,
        )
    return NotifyConfig(
        rules_path=settings.alert_rules_path,
        timezone=local_zone(settings),
        public_base_url=public_base_url(settings),
        camera_root=settings.camera_root,
        webhook=webhook,
        email=email,
        mqtt=mqtt,
        send_attempts=settings.alert_send_attempts,
        backoff_base_seconds=settings.alert_retry_backoff_seconds,
        claim_lease_seconds=settings.alert_claim_lease_seconds,
        state_ttl_seconds=settings.alert_state_ttl_days * 86_400,
        late_after_seconds=settings.alert_late_after_seconds,
        max_age_seconds=settings.alert_max_age_seconds,
    )


def redis_config(settings: Settings, url: str) -> RedisConfig:
    return RedisConfig(
        url=url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_socket_timeout_seconds,
        connect_timeout=settings.redis_connect_timeout_seconds,
        health_check_interval=settings.redis_health_check_interval_seconds,
        retry_attempts=settings.redis_retry_attempts,
        backoff_base=settings.redis_retry_backoff_base_seconds,
        backoff_cap=settings.redis_retry_backoff_cap_seconds,
    )


def pool_config(settings: Settings) -> PoolConfig:
    return PoolConfig(
        size=settings.database_pool_size,
        max_overflow=settings.database_pool_max_overflow,
        timeout_seconds=settings.database_pool_timeout_seconds,
        recycle_seconds=settings.database_pool_recycle_seconds,
        echo=settings.database_echo,
        # A ping only for a connection idle 30 s or whose server spoke meanwhile (it is ending
        # it): a ping per checkout was a round trip per projector transaction.
        check_idle_seconds=30.0,
    )


def tls_config(settings: Settings) -> TLSConfig:
    """Map the `TLS_*` settings; self-signed files go to `DATA_DIR/certs`."""
    return TLSConfig(
        mode=str(settings.tls_mode.value),
        cert_path=settings.tls_cert_path,
        key_path=settings.tls_key_path,
        ca_path=settings.tls_ca_path,
        verify_client=settings.tls_verify_client,
        min_version=settings.tls_min_version,
        cert_dir=settings.data_dir / "certs",
        hostnames=tuple(settings.tls_hostnames),
        ip_addresses=tuple(settings.tls_ip_addresses),
        days=settings.tls_cert_days,
    )


def telemetry_config(settings: Settings, *, metrics_enabled: bool = True) -> TelemetryConfig:
    return TelemetryConfig(
        service_name=settings.otel_service_name,
        otlp_endpoint=settings.otel_exporter_otlp_endpoint,
        sampler_ratio=settings.otel_traces_sampler_ratio,
        metrics_enabled=metrics_enabled,
    )


def logging_config(settings: Settings, db_url: str | None = None) -> LoggingConfig:
    """`db_url` (e.g. the embedded server's) overrides `DATABASE_URL`; the database handler is
    attached only when `LOG_DB_ENABLED` is true."""
    return LoggingConfig(
        level=settings.log_level,
        format=settings.log_format,
        file=settings.log_file,
        file_max_bytes=settings.log_file_max_bytes,
        file_backup_count=settings.log_file_backup_count,
        db_url=(db_url or settings.database_url) if settings.log_db_enabled else None,
        db_min_level=settings.log_db_min_level,
        service_name=settings.otel_service_name,
    )


def ftp_config(settings: Settings) -> FTPConfig:
    """Map the `FTP_*` settings (and `TLS_*`: FTPS whenever HSI's TLS is on).

    Call it when `FTP_ENABLED` is true: a configuration without accounts is refused."""
    tls = tls_config(settings)
    masquerade = settings.ftp_masquerade_address
    return FTPConfig(
        host=settings.ftp_host,
        port=settings.ftp_port,
        passive_ports=parse_port_range(settings.ftp_passive_ports),
        accounts=parse_accounts(settings.ftp_accounts),
        camera_root=settings.camera_root,
        max_upload_bytes=settings.ftp_max_upload_mb * MIB,
        tls=tls if tls.enabled else None,
        require_tls=settings.ftp_require_tls,
        masquerade_address=(masquerade.strip() or None) if masquerade else None,
        allow_overwrite=settings.ftp_allow_overwrite,
        max_connections_per_ip=settings.ftp_max_connections_per_ip,
        login_timeout=settings.ftp_login_timeout_seconds,
        ban_after_failures=settings.ftp_ban_after_failures,
        ban_window=settings.ftp_ban_window_seconds,
        ban_seconds=settings.ftp_ban_seconds,
        quota_bytes_per_day=settings.ftp_quota_mb_per_day * MIB,
        quota_files_per_day=settings.ftp_quota_files_per_day,
    )


def api_config(settings: Settings, *, database_url: str, redis: RedisConfig) -> APIConfig:
    return APIConfig(
        database_url=database_url,
        redis=redis,
        stream_prefix=settings.stream_prefix,
        camera_root=settings.camera_root,
        data_dir=settings.data_dir,
        thumbnail_max_width=settings.thumbnail_max_width,
        thumbnail_jpeg_quality=settings.thumbnail_jpeg_quality,
        clock_tolerance_seconds=settings.batch_clock_tolerance_seconds,
        thumbnail_concurrency=settings.thumbnail_concurrency,
        export_max_mb=settings.export_max_mb,
        export_picture_max_width=settings.export_picture_max_width,
        timezone=local_tzinfo(settings),
        search_language=settings.search_language,
        severity=SeverityThresholds(
            settings.severity_low_max, settings.severity_medium_max, settings.severity_high_max
        ),
        # unset (None) is decided by `hsi.app.keys.with_api_keys()` before this; if it was not,
        # keys are required beyond loopback and APIConfig refuses to start without one
        api_key_enabled=keys_required(settings.api_key_enabled, settings.api_host),
        api_keys=tuple(settings.api_keys),
        metrics_open=settings.api_metrics_open,
        forwarded_allow_ips=tuple(settings.forwarded_allow_ips),
        cors_origins=tuple(settings.cors_origins),
        cors_allow_credentials=settings.cors_allow_credentials,
        rate_limits=RateLimits(
            enabled=settings.rate_limit_enabled,
            requests_per_minute=settings.rate_limit_requests_per_minute,
            media_requests_per_minute=settings.rate_limit_media_requests_per_minute,
            live_connections_per_client=settings.rate_limit_live_connections_per_client,
            live_max_connections=settings.live_max_connections,
        ),
        live=LiveConfig(
            heartbeat_seconds=settings.live_heartbeat_seconds,
            idle_timeout_seconds=settings.live_idle_timeout_seconds,
        ),
    )


def web_config(settings: Settings) -> WebConfig:
    zone = local_zone(settings)
    return WebConfig(
        timezone=ZoneInfo(zone) if isinstance(zone, str) else zone,
        backends=ai_backends(settings),
        zones=load_zones(settings.zones_path),
    )


def ai_backends(settings: Settings) -> tuple[AIBackend, ...]:
    if settings.detector_backend is DetectorBackend.EMBEDDED:
        detector = AIBackend(
            "detector", "embedded CPU detector (NanoDet-g 416, onnxruntime)", module="onnxruntime"
        )
    else:
        detector = AIBackend(
            "detector",
            f"RT-DETR at {mask_url_password(settings.rtdetr_url)}",
            probe_url=settings.rtdetr_url,
        )
    if settings.analyzer_backend is AnalyzerBackend.RULES:
        analyzer = AIBackend("analyzer", "rule-based scorer (no LLM configured)")
    else:
        analyzer = AIBackend(
            "analyzer",
            f"LLM {settings.llm_model} at {mask_url_password(settings.llm_url)}",
            probe_url=settings.llm_url.rstrip("/") + "/v1/models",
        )
    return detector, analyzer


# A file its writer closed (inotify) is looked at once: the close says the upload is done, and
# one that does not decode completely still waits WATCH_STABLE_SECONDS like an open one.
CLOSE_DEBOUNCE_SECONDS = 0.0


def watch_config(settings: Settings) -> WatchConfig:
    zone = local_zone(settings)
    return WatchConfig(
        polling=settings.watch_polling,
        poll_interval=settings.watch_poll_interval_seconds,
        stable_seconds=settings.watch_stable_seconds,
        incomplete_timeout_seconds=settings.watch_incomplete_timeout_seconds,
        min_image_bytes=settings.min_image_size_bytes,
        min_video_bytes=settings.min_video_size_bytes,
        max_image_bytes=settings.max_image_size_bytes,
        max_video_bytes=settings.max_video_size_bytes,
        dedupe_ttl_seconds=settings.dedupe_ttl,
        timezone=zone if isinstance(zone, str) else _zone_name(zone),
        close_debounce_seconds=CLOSE_DEBOUNCE_SECONDS,
    )


def _zone_name(zone: object) -> str:
    """A name zoneinfo understands for the local zone, else UTC."""
    key = getattr(zone, "key", None)
    if isinstance(key, str):
        return key
    try:
        from pathlib import Path

        link = Path("/etc/localtime").resolve()
        if "zoneinfo" in link.parts:
            return "/".join(link.parts[link.parts.index("zoneinfo") + 1 :])
    except OSError:
        pass
    return "UTC"


def retention_rules(settings: Settings) -> RetentionRules:
    """RETENTION_DAYS and the rules of RETENTION_RULES_PATH, checked against
    RETENTION_DELETE_MEDIA (raises RetentionError saying what to fix)."""
    path = settings.retention_rules_path
    document = {}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise RetentionError(
                f"cannot read RETENTION_RULES_PATH {path} ({type(exc).__name__}): check the path "
                "and its permissions, or unset it"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise RetentionError(f"RETENTION_RULES_PATH {path} is not valid TOML: {exc}") from exc
    rules = parse_rules(document, settings.retention_days)
    rules.check(settings.retention_delete_media)
    return rules

"""Settings → the small frozen configs the write side takes (STYLE: settings flow down)."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

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
from streams.detectors import DetectorConfig
from streams.names import StreamNames
from streams.reclaim import ReclaimConfig
from streams.severity import SeverityThresholds
from streams.stages.runtime import ConsumeConfig

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
    )

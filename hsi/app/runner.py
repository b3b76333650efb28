"""Process entry points: `hsi up` (everything in one process) and `hsi worker` (some stages).

Both start (or reuse) the embedded servers where no URL is configured, apply migrations, set up
logging and telemetry, then run their parts in one asyncio loop until SIGINT/SIGTERM, and stop
gracefully: the batches in hand are finished before the process exits.

Metrics: `hsi up` serves `/metrics` on its API. `hsi worker` and `hsi watch` have no API, so with
`METRICS_PORT` set (0, the default, is off) each serves its own `/metrics` on
`API_HOST:METRICS_PORT` (prometheus_client's exposition server, on a thread of its own): a scrape
always gets the whole view of one process, never a random worker's part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import REGISTRY, start_http_server

from hsi.app.asgi import create_app
from hsi.app.keys import announce, with_api_keys
from hsi.app.markers import restore_lost_markers
from hsi.app.pipeline import ALL_STAGES, Pipeline, PipelineOptions
from hsi.app.services import ServiceURLs, ensure_services
from hsi.ftp.config import FTPError
from hsi.ftp.server import FtpReceiver
from hsi.infra.certificates import TLSError
from hsi.infra.db import DatabaseError, create_engine, migrate
from hsi.infra.embedded import EmbeddedServerError
from hsi.infra.redis import (
    RedisClient,
    RedisConfig,
    RedisUnavailableError,
    check_server,
    create_redis,
)
from hsi.infra.telemetry import current_telemetry, setup_telemetry
from hsi.infra.tls import uvicorn_ssl_options
from hsi.logs.setup import log_event, setup_logging
from hsi.settings import components
from projections.errors import RetentionError
from streams.alerts import AlertError
from streams.names import Group
from streams.watch.watcher import Watcher
from streams.zones import ZonesError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from hsi.settings.model import Settings
    from projections.retention_rules import RetentionRules
    from streams.detectors import Detector
    from streams.watch.outcomes import Outcome


class MetricsServerError(Exception):
    """The process's own `/metrics` server cannot start."""


STARTUP_ERRORS: tuple[type[Exception], ...] = (
    AlertError,
    ZonesError,
    FTPError,
    DatabaseError,
    EmbeddedServerError,
    RedisUnavailableError,
    TLSError,
    MetricsServerError,
    RetentionError,
)

log = logging.getLogger("hsi.up")


async def _prepare(database_url: str | None, redis: RedisConfig) -> list[str]:
    """Check Redis; apply migrations when this process uses PostgreSQL."""
    client = create_redis(redis)
    try:
        health = await check_server(client)
    finally:
        await client.aclose()
    if not health.append_only:
        log_event(
            log,
            "redis.no_persistence",
            level=logging.WARNING,
            detail="append-only persistence is off: a Redis restart may lose entries",
        )
    if database_url is None:
        return []
    engine = create_engine(database_url)
    try:
        return await migrate(engine)
    finally:
        await engine.dispose()


def _boot(settings: Settings, *, postgres: bool = True) -> ServiceURLs:
    urls = ensure_services(settings, postgres=postgres)
    setup_logging(components.logging_config(settings, db_url=urls.database_url))
    setup_telemetry(components.telemetry_config(settings))
    return urls


@dataclass(frozen=True)
class UpOptions:
    host: str | None = None
    port: int | None = None
    watch: bool = True


def run_up(settings: Settings, options: UpOptions | None = None) -> None:
    """Everything for a single home in one process: watcher, stages, reclaimers, API."""
    options = options or UpOptions()
    urls = _boot(settings)
    asyncio.run(_up(settings, urls, options))


async def _up(settings: Settings, urls: ServiceURLs, options: UpOptions) -> None:
    assert urls.database_url is not None
    redis_config = components.redis_config(settings, urls.redis_url)
    applied = await _prepare(urls.database_url, redis_config)
    settings.camera_root.mkdir(parents=True, exist_ok=True)
    log_event(
        log,
        "hsi.starting",
        embedded=",".join(urls.embedded) or "none",
        migrations_applied=len(applied),
        camera_root=str(settings.camera_root),
    )
    server, url, dashboard = _api_server(settings, urls.database_url, redis_config, options)
    rules = components.retention_rules(settings)
    pipeline = Pipeline(
        settings,
        urls.redis_url,
        PipelineOptions(stages=ALL_STAGES),
        database_url=urls.database_url,
    )
    await pipeline.start()
    retention = asyncio.create_task(
        _retention_loop(settings, rules, urls, pipeline), name="retention"
    )
    watcher = build_watcher(settings, pipeline.redis) if options.watch else None
    if watcher is not None:
        await watcher.start()
    receiver = FtpReceiver(components.ftp_config(settings)) if settings.ftp_enabled else None
    if receiver is not None:
        await asyncio.to_thread(receiver.start)
    log_event(log, "api.listening", url=url, dashboard=dashboard)
    loop = _exit_on_signals(server)
    try:
        await server.serve()  # returns once a signal asked it to exit
    finally:
        _restore_signals(loop)
        retention.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retention
        if receiver is not None:
            await asyncio.to_thread(receiver.stop)
        if watcher is not None:
            await watcher.stop()
        await pipeline.stop()


def _api_server(
    settings: Settings, database_url: str, redis_config: RedisConfig, options: UpOptions
) -> tuple[_Server, str, str]:
    """The API's uvicorn server (TLS from settings), its URL and the dashboard's URL."""
    ssl_options = uvicorn_ssl_options(components.tls_config(settings))
    host = options.host or settings.api_host
    port = settings.api_port if options.port is None else options.port
    choice = with_api_keys(settings.model_copy(update={"api_host": host}), host)
    announce(choice, host)
    settings = choice.settings
    app = create_app(
        components.api_config(settings, database_url=database_url, redis=redis_config),
        components.web_config(settings),
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            # an open live feed must not hold shutdown until its idle timeout
            timeout_graceful_shutdown=5,
            # the app reads X-Forwarded-* from FORWARDED_ALLOW_IPS itself, after it judged the
            # immediate peer (whose X-Request-ID only a trusted proxy may set)
            proxy_headers=False,
            **ssl_options,
        )
    )
    scheme = "https" if ssl_options else "http"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return server, f"{scheme}://{host}:{port}", f"{scheme}://{shown}:{port}/"


def _exit_on_signals(server: _Server) -> asyncio.AbstractEventLoop:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)
    return loop


def _restore_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)


def run_api(settings: Settings, options: UpOptions | None = None) -> None:
    """Only the query API and dashboard, until SIGINT/SIGTERM (stages run as `hsi worker`)."""
    options = options or UpOptions(watch=False)
    urls = _boot(settings)
    asyncio.run(_api(settings, urls, options))


async def _api(settings: Settings, urls: ServiceURLs, options: UpOptions) -> None:
    assert urls.database_url is not None
    redis_config = components.redis_config(settings, urls.redis_url)
    await _prepare(urls.database_url, redis_config)
    server, url, dashboard = _api_server(settings, urls.database_url, redis_config, options)
    log_event(log, "api.listening", url=url, dashboard=dashboard)
    loop = _exit_on_signals(server)
    try:
        await server.serve()
    finally:
        _restore_signals(loop)


async def _retention_loop(
    settings: Settings, rules: RetentionRules, urls: ServiceURLs, pipeline: Pipeline
) -> None:
    """`hsi retention run` every RETENTION_INTERVAL_SECONDS, inside `hsi up`."""
    from hsi.app.read_side import retention

    assert urls.database_url is not None
    while True:
        await asyncio.sleep(settings.retention_interval_seconds)
        engine = create_engine(urls.database_url)
        try:
            report = await retention(
                engine,
                pipeline.redis,
                pipeline.names,
                retention_days=settings.retention_days,
                delete_media=settings.retention_delete_media,
                camera_root=settings.camera_root,
                rules=rules,
            )
            log_event(
                log,
                "retention.done",
                entries_trimmed=report.trimmed,
                rows_deleted=sum(report.rows.values()),
                media_deleted=report.media_deleted,
            )
        except Exception:
            log.exception("retention.failed")
        finally:
            await engine.dispose()


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: uvicorn re-raises a caught SIGTERM when
    `serve()` returns, which would kill the process before the pipeline is stopped. `hsi up`
    installs its handlers on the loop and stops everything itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


def metrics_port(settings: Settings) -> int:
    """METRICS_PORT: the `/metrics` port of `hsi worker` and `hsi watch`; 0 is off."""
    return settings.metrics_port


def serve_metrics(host: str, port: int) -> Callable[[], None]:
    """Serve this process's Prometheus exposition on `host:port` (a daemon thread); returns the
    function that stops it. Raises `MetricsServerError` when the port cannot be bound."""
    current = current_telemetry()
    registry = current.registry if current is not None else REGISTRY
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsServerError(
            f"cannot serve /metrics on {host}:{port}: {exc}. Another process may hold the "
            "port. Fix: set METRICS_PORT to a free port (one per process on a host), or 0 to "
            "turn the metrics server off"
        ) from exc
    log_event(log, "metrics.listening", url=f"http://{host}:{server.server_port}/metrics")

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def _metrics_server(settings: Settings) -> Callable[[], None]:
    port = metrics_port(settings)
    if port <= 0:
        return lambda: None
    return serve_metrics(settings.api_host, port)


def run_worker(
    settings: Settings, options: PipelineOptions, *, detector: Detector | None = None
) -> None:
    """Some stages for some cameras, until SIGINT/SIGTERM. `detector` replaces the one the
    settings name (the benchmarks' zero-cost detector); None builds it from the settings."""
    urls = _boot(settings, postgres=Group.PROJECT in options.stages)
    asyncio.run(_worker(settings, urls, options, detector))


async def _worker(
    settings: Settings, urls: ServiceURLs, options: PipelineOptions, detector: Detector | None
) -> None:
    await _prepare(urls.database_url, components.redis_config(settings, urls.redis_url))
    pipeline = Pipeline(
        settings, urls.redis_url, options, detector=detector, database_url=urls.database_url
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stop_metrics = _metrics_server(settings)
    try:
        await pipeline.start()
        try:
            await stop.wait()
        finally:
            await pipeline.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await asyncio.to_thread(stop_metrics)


def run_watch(settings: Settings) -> None:
    """Only the watcher, until SIGINT/SIGTERM."""
    urls = _boot(settings, postgres=False)
    asyncio.run(_watch(settings, urls))


async def _watch(settings: Settings, urls: ServiceURLs) -> None:
    settings.camera_root.mkdir(parents=True, exist_ok=True)
    client = create_redis(components.redis_config(settings, urls.redis_url))
    watcher = build_watcher(settings, client)
    await guard_markers(settings, client, urls.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        stop_metrics = _metrics_server(settings)
        try:
            await watcher.run(stop)
        finally:
            await asyncio.to_thread(stop_metrics)
    finally:
        await client.aclose()


def run_ingest(settings: Settings, paths: list[Path]) -> list[Outcome]:
    """Backfill: each path (file or folder) through the watcher's checks, then return."""
    urls = ensure_services(settings, postgres=False)
    return asyncio.run(ingest_paths(settings, urls, paths))


async def ingest_paths(settings: Settings, urls: ServiceURLs, paths: list[Path]) -> list[Outcome]:
    """`hsi ingest` in a running loop: the dedupe markers guarded, then each path ingested."""
    client = create_redis(components.redis_config(settings, urls.redis_url))
    try:
        watcher = build_watcher(settings, client)
        await guard_markers(settings, client, urls.database_url)
        outcomes: list[Outcome] = []
        for path in paths:
            outcomes.extend(await watcher.ingest(path))
        return outcomes
    finally:
        await client.aclose()


def run_ftp(settings: Settings) -> None:
    """Only the FTP receiver, until SIGINT/SIGTERM (the watcher runs elsewhere)."""
    setup_logging(components.logging_config(settings))
    settings.camera_root.mkdir(parents=True, exist_ok=True)
    asyncio.run(_ftp(settings))


async def _ftp(settings: Settings) -> None:
    receiver = FtpReceiver(components.ftp_config(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await receiver.run(stop)


async def guard_markers(settings: Settings, redis: RedisClient, database_url: str | None) -> None:
    """Before a watcher scans: give its dedupe markers back to a Redis that lost them, when
    PostgreSQL is configured (`hsi.app.markers`)."""
    if database_url is None:
        return
    engine = create_engine(database_url)
    try:
        await restore_lost_markers(
            redis,
            components.stream_names(settings),
            engine,
            ttl_seconds=components.watch_config(settings).dedupe_ttl,
        )
    except Exception as exc:  # new uploads matter more than the guard: watch without it
        log_event(
            log,
            "redis.markers_restore_failed",
            level=logging.ERROR,
            detail="could not give the dedupe markers back from PostgreSQL; if Redis lost its "
            "data, files still on disk may be published again. Check DATABASE_URL and that "
            "`hsi migrate` ran",
            error=repr(exc),
        )
    finally:
        await engine.dispose()


def build_watcher(settings: Settings, redis: RedisClient) -> Watcher:
    return Watcher(
        redis,
        components.stream_names(settings),
        settings.camera_root,
        components.watch_config(settings),
    )

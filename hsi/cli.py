"""The `hsi` command line: the composition root that reads settings and wires everything."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from hsi.config import Settings, SettingsError, get_settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@click.group()
@click.version_option(package_name="hsi")
def main() -> None:
    """HSI — home security intelligence: camera uploads to scored security events."""


# --- config -------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
def config_show() -> None:
    """Print every setting (secrets masked) as JSON."""
    click.echo(json.dumps(_settings().masked(), indent=2, sort_keys=True, default=str))


# --- services -----------------------------------------------------------------------------------


@main.group()
def services() -> None:
    """Manage the embedded Redis and PostgreSQL (used when REDIS_URL/DATABASE_URL are unset)."""


def _embedded_error() -> type[Exception]:
    from hsi.embedded import EmbeddedServerError

    return EmbeddedServerError


@services.command("start")
def services_start() -> None:
    """Start (or reuse) the embedded servers and print their URLs."""
    from hsi.services import ensure_services

    settings = _settings()
    try:
        urls = ensure_services(settings)
    except _embedded_error() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"redis     {urls.redis_url}")
    click.echo(f"postgres  {urls.database_url}")


@services.command("stop")
def services_stop() -> None:
    """Stop the embedded servers."""
    from hsi.services import embedded_servers

    stopped = embedded_servers(_settings()).stop()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services.command("status")
def services_status() -> None:
    """Show whether the embedded servers run, with pid and URL."""
    from hsi.services import embedded_servers

    for status in embedded_servers(_settings()).status():
        state = "running" if status.running else "stopped"
        pid = f"pid {status.pid}" if status.pid else ""
        click.echo(f"{status.name:<9} {state:<8} {pid:<11} {status.url or status.detail}")


# --- database -----------------------------------------------------------------------------------


async def _migrate(database_url: str) -> list[str]:
    from hsi.db import create_engine, migrate

    engine = create_engine(database_url)
    try:
        return await migrate(engine)
    finally:
        await engine.dispose()


@main.command("migrate")
def migrate_command() -> None:
    """Apply the pending SQL migrations (starting the embedded PostgreSQL if needed)."""
    from hsi.db import DatabaseError
    from hsi.services import ensure_services

    settings = _settings()
    try:
        urls = ensure_services(settings)
        applied = _run(_migrate(urls.database_url))
    except (DatabaseError, _embedded_error()) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("applied: " + ", ".join(applied) if applied else "migrations are current")


# --- certificates -------------------------------------------------------------------------------


@main.group()
def certs() -> None:
    """TLS certificates."""


@certs.command("generate")
@click.option("--force", is_flag=True, help="Replace an existing certificate.")
def certs_generate(force: bool) -> None:
    """Generate a self-signed certificate for the configured host names and addresses."""
    from hsi import tls

    settings = _settings()
    config = tls.TLSConfig.from_settings(settings)
    cert, key = config.cert_dir / "hsi.crt", config.cert_dir / "hsi.key"
    if cert.exists() and not force:
        raise click.ClickException(f"{cert} exists; pass --force to replace it")
    try:
        info = tls.generate_self_signed(
            cert,
            key,
            hostnames=config.hostnames,
            ip_addresses=config.ip_addresses,
            days=config.days,
        )
    except tls.TLSError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"certificate: {cert}\nkey:         {key}")
    click.echo(tls.describe(info))


@certs.command("show")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def certs_show(path: str | None) -> None:
    """Show a certificate (default: the configured or generated one)."""
    from pathlib import Path

    from hsi import tls

    settings = _settings()
    config = tls.TLSConfig.from_settings(settings)
    target = Path(path) if path else (config.cert_path or config.cert_dir / "hsi.crt")
    try:
        click.echo(tls.describe(tls.inspect_certificate(target)))
    except tls.TLSError as exc:
        raise click.ClickException(str(exc)) from None


# --- doctor -------------------------------------------------------------------------------------


@main.command("doctor")
def doctor() -> None:
    """Check Redis, PostgreSQL, the AI backends and the camera root; one line each."""
    from hsi.doctor import Status, run_checks

    verdicts = _run(run_checks(_settings()))
    for verdict in verdicts:
        click.echo(verdict.line())
    if any(v.status is Status.FAIL for v in verdicts):
        sys.exit(1)


# --- up -----------------------------------------------------------------------------------------


@main.command("up")
@click.option("--host", default=None, help="Bind address (default API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default API_PORT).")
def up(host: str | None, port: int | None) -> None:
    """Start the services, apply migrations and serve HSI."""
    from hsi.runner import run_up

    settings = _settings()
    try:
        run_up(settings, host=host, port=port)
    except Exception as exc:
        from hsi.runner import STARTUP_ERRORS

        if isinstance(exc, STARTUP_ERRORS):
            raise click.ClickException(str(exc)) from None
        raise


if __name__ == "__main__":  # pragma: no cover
    main()

"""`hsi services` and `hsi migrate`: the embedded Redis and PostgreSQL, and the SQL migrations."""

from __future__ import annotations

import click

from hsi.cli.common import cli_settings, click_errors, embedded_error, run


@click.group()
def services() -> None:
    """Manage the embedded Redis and PostgreSQL (used when REDIS_URL/DATABASE_URL are unset)."""


@services.command("start")
def services_start() -> None:
    """Start (or reuse) the embedded servers and print their URLs (passwords masked)."""
    from hsi.app.services import ensure_services
    from hsi.settings.masking import mask_url_password

    settings = cli_settings()
    with click_errors(embedded_error()):
        urls = ensure_services(settings)
    click.echo(f"redis     {mask_url_password(urls.redis_url)}")
    click.echo(f"postgres  {mask_url_password(urls.database_url or '')}")


@services.command("url")
@click.argument("name", required=False, type=click.Choice(["redis", "postgres"]))
def services_url(name: str | None) -> None:
    """Print the URLs of the running embedded servers with their passwords, for redis-cli and
    psql: `psql "$(hsi services url postgres)"`, `redis-cli -u "$(hsi services url redis)"`."""
    from hsi.app.services import embedded_servers
    from hsi.logs.postgres import libpq_conninfo

    for status in embedded_servers(cli_settings()).status():
        if name not in (None, status.name):
            continue
        if status.url is None:
            detail = f"the embedded {status.name} is not running ({status.detail})"
            raise click.ClickException(f"{detail}; start it with `hsi services start`")
        url = libpq_conninfo(status.url) if status.name == "postgres" else status.url
        click.echo(url if name else f"{status.name:<9} {url}")


@services.command("stop")
def services_stop() -> None:
    """Stop the embedded servers."""
    from hsi.app.services import embedded_servers

    stopped = embedded_servers(cli_settings()).stop()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services.command("status")
def services_status() -> None:
    """Show whether the embedded servers run, with pid and URL."""
    from hsi.app.services import embedded_servers
    from hsi.settings.masking import mask_url_password

    for status in embedded_servers(cli_settings()).status():
        state = "running" if status.running else "stopped"
        pid = f"pid {status.pid}" if status.pid else ""
        shown = mask_url_password(status.url) if status.url else status.detail
        click.echo(f"{status.name:<9} {state:<8} {pid:<11} {shown}")


async def _migrate(database_url: str) -> list[str]:
    from hsi.infra.db import create_engine, migrate

    engine = create_engine(database_url)
    try:
        return await migrate(engine)
    finally:
        await engine.dispose()


@click.command("migrate")
def migrate_command() -> None:
    """Apply the pending SQL migrations (starting the embedded PostgreSQL if needed)."""
    from hsi.app.services import ensure_services
    from hsi.infra.db import DatabaseError

    settings = cli_settings()
    with click_errors(DatabaseError, embedded_error()):
        urls = ensure_services(settings)
        assert urls.database_url is not None  # asked for by default
        applied = run(_migrate(urls.database_url))
    click.echo("applied: " + ", ".join(applied) if applied else "migrations are current")

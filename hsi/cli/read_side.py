"""`hsi replay` and `hsi retention`: rebuild the projections, delete what is too old."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from hsi.cli.common import cli_settings, click_errors, embedded_error, run

T = TypeVar("T")


def read_side_call(fn: Callable[..., Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    """Run `fn(engine, redis, names, **kwargs)` against the configured (or embedded) servers."""
    from hsi.app.services import ensure_services
    from hsi.infra.db import DatabaseError, create_engine
    from hsi.infra.redis import create_redis
    from hsi.settings import components

    settings = cli_settings()
    with click_errors(embedded_error()):
        urls = ensure_services(settings)
    assert urls.database_url is not None

    async def call() -> T:
        engine = create_engine(urls.database_url or "")
        client = create_redis(components.redis_config(settings, urls.redis_url))
        try:
            return await fn(engine, client, components.stream_names(settings), **kwargs)
        finally:
            await client.aclose()
            await engine.dispose()

    with click_errors(DatabaseError):
        return run(call())


class ProgressLine:
    """`done/total, rate, ETA` on one terminal line (stderr)."""

    def __init__(self, label: str) -> None:
        import time

        self._label = label
        self._clock = time.monotonic
        self._start = self._clock()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        from hsi.app.read_side import eta_seconds

        now = self._clock()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        elapsed = now - self._start
        eta = eta_seconds(done, total, elapsed)
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        eta_text = f"ETA {eta:.0f}s" if eta is not None else "ETA -"
        click.echo(
            f"\r{self._label} [{bar}] {done}/{total} {rate:.0f}/s {eta_text}   ",
            nl=False,
            err=True,
        )
        if done >= total:
            click.echo("", err=True)


@click.command("replay")
@click.option(
    "--projection",
    default="main",
    show_default=True,
    type=click.Choice(["main"]),
    help="Which projection to rebuild.",
)
@click.option("--verify", is_flag=True, help="Rebuild aside and compare; change nothing.")
def replay(projection: str, verify: bool) -> None:
    """Rebuild the projections from the streams and swap them in while the API serves."""
    from hsi.app import read_side

    if verify:
        report = read_side_call(read_side.verify, progress=ProgressLine("verify"))
        for line in read_side.verify_lines(report):
            click.echo(line)
        if not report.equal:
            sys.exit(1)
        return
    done = read_side_call(read_side.replay, progress=ProgressLine("replay"))
    click.echo(
        f"rebuilt {projection} from {done.entries} entries of {done.streams} streams "
        f"({len(done.cameras)} cameras; {done.applied} applied, {done.failed} unreadable)"
    )


@click.group()
def retention() -> None:
    """Delete what is older than RETENTION_DAYS (or RETENTION_RULES_PATH's rules)."""


def _retention(dry_run: bool) -> None:
    from hsi.app import read_side
    from hsi.settings import components
    from projections.errors import RetentionError

    settings = cli_settings()
    with click_errors(RetentionError):
        rules = components.retention_rules(settings)
        report = read_side_call(
            read_side.retention,
            retention_days=settings.retention_days,
            delete_media=settings.retention_delete_media,
            camera_root=settings.camera_root,
            rules=rules,
            dry_run=dry_run,
        )
    for line in read_side.retention_lines(report):
        click.echo(line)


@retention.command("run")
def retentionrun() -> None:
    """One retention pass: projection rows, acknowledged stream entries, optionally media."""
    _retention(dry_run=False)


@retention.command("plan")
def retentionplan() -> None:
    """What `hsi retention run` would delete now, per camera and risk level; changes nothing."""
    _retention(dry_run=True)

"""`hsi dlq`: list, show, retry and drop dead letters (entries that failed too many times)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from hsi.cli.common import cli_settings, click_errors, run
from hsi.cli.read_side import read_side_call

T = TypeVar("T")


@click.group()
def dlq() -> None:
    """Dead letters: entries that failed too many times."""


def _dlq_call(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    from hsi.app.services import running_services
    from streams.dlq import DeadLetterError

    settings = cli_settings()
    _, redis_url = running_services(settings)
    if redis_url is None:
        raise click.ClickException("Redis is not running: start it with `hsi services start`")

    async def call() -> T:
        from hsi.infra.redis import create_redis
        from hsi.settings import components

        client = create_redis(components.redis_config(settings, redis_url))
        try:
            return await fn(client, components.stream_names(settings), *args)
        finally:
            await client.aclose()

    with click_errors(DeadLetterError):
        return run(call())


async def _cameras(client: Any, names: Any) -> list[str]:
    members = await client.smembers(names.camera_set)
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


@dlq.command("list")
@click.option("--camera", default=None, help="Only this camera.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def dlq_list(camera: str | None, limit: int) -> None:
    """List dead letters, newest first."""
    from streams.dlq import list_dead

    async def listing(client: Any, names: Any) -> list[Any]:
        cameras = [camera] if camera else await _cameras(client, names)
        return await list_dead(client, names, cameras, limit)

    letters = _dlq_call(listing)
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        click.echo(
            f"{letter.camera:<16} {letter.dead_id:<18} {letter.group:<8} "
            f"{letter.original_type or '-':<20} x{letter.deliveries:<3} {letter.last_error}"
        )


@dlq.command("show")
@click.argument("camera")
@click.argument("dead_id")
def dlq_show(camera: str, dead_id: str) -> None:
    """Show one dead letter with its original entry."""
    from streams.dlq import show_dead

    detail = _dlq_call(show_dead, camera, dead_id)
    letter = detail.letter
    click.echo(f"dead letter {letter.dead_id} of {letter.camera}")
    click.echo(f"  source:     {letter.source_stream} {letter.entry_id} (group {letter.group})")
    click.echo(f"  deliveries: {letter.deliveries}")
    click.echo(f"  error:      {letter.last_error}")
    if detail.original is not None:
        click.echo("  original:   " + detail.original.model_dump_json(indent=2))
    elif detail.original_error:
        click.echo(f"  original:   unreadable ({detail.original_error})")


@dlq.command("retry")
@click.argument("camera")
@click.argument("dead_id")
def dlq_retry(camera: str, dead_id: str) -> None:
    """Re-publish the original entry to its stream (with a retry_of header)."""
    from streams.dlq import retry_dead

    new_id = _dlq_call(retry_dead, camera, dead_id)
    _forget_dead_letter(camera, dead_id)
    click.echo(f"re-published as {new_id}")


@dlq.command("drop")
@click.argument("camera")
@click.argument("dead_id")
def dlq_drop(camera: str, dead_id: str) -> None:
    """Delete a dead letter for good."""
    from streams.dlq import drop_dead

    _dlq_call(drop_dead, camera, dead_id)
    _forget_dead_letter(camera, dead_id)
    click.echo("dropped")


def _forget_dead_letter(camera: str, dead_id: str) -> None:
    """Remove the projected row of a dead letter that left its stream."""
    from hsi.app import read_side

    async def forget(engine: Any, _redis: Any, names: Any) -> bool:
        return await read_side.dead_letter_removed(engine, names, camera, dead_id)

    read_side_call(forget)

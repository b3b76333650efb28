"""`hsi config`: the settings as JSON and the configuration reference generated from them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hsi.cli.common import cli_settings


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
def config_show() -> None:
    """Print every setting (secrets masked) as JSON."""
    click.echo(json.dumps(cli_settings().masked(), indent=2, sort_keys=True, default=str))


@config.command("docs")
@click.option("--write", is_flag=True, help="Write docs/configuration.md and .env.example.")
@click.option(
    "--check", is_flag=True, help="Exit 1 when the checked-in files differ from Settings."
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="The repository root holding docs/ and .env.example.",
)
def config_docs(write: bool, check: bool, root: Path) -> None:
    """Print the configuration reference (Markdown) generated from the settings."""
    from hsi.settings import docs

    if write and check:
        raise click.UsageError("use --write or --check, not both")
    if check:
        stale = docs.stale_files(root)
        for path in stale:
            click.echo(f"out of date: {path.as_posix()}", err=True)
        if stale:
            click.echo(f"run `{docs.REGENERATE_COMMAND}` and commit the result", err=True)
            sys.exit(1)
        click.echo("configuration docs are up to date")
    elif write:
        written = docs.write_files(root)
        for path in written:
            click.echo(f"wrote {path.as_posix()}")
        if not written:
            click.echo("configuration docs are up to date")
    else:
        click.echo(docs.render_markdown(), nl=False)

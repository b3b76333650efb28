"""`hsi api-key`: print the API key HSI generated, or make a new key for API_KEYS."""

from __future__ import annotations

import click

from hsi.cli.common import cli_settings


@click.command("api-key")
@click.option("--new", is_flag=True, help="Print a new random key (for API_KEYS); store nothing.")
def api_key(new: bool) -> None:
    """Print the API key HSI generated under DATA_DIR (when API_KEYS is empty)."""
    from hsi.api.keys import new_key

    if new:
        click.echo(new_key())
        return
    from hsi.app.keys import api_key_path

    settings = cli_settings()
    path = api_key_path(settings)
    if settings.api_keys:
        raise click.ClickException(
            f"API_KEYS is set: the API accepts those keys ({len(settings.api_keys)}), not a "
            "generated one"
        )
    try:
        click.echo(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        raise click.ClickException(
            f"no generated key in {path}: HSI makes one at the first start of an API that "
            "listens beyond loopback (API_HOST) without API_KEYS; on loopback no key is needed"
        ) from None
    except PermissionError:
        raise click.ClickException(
            f"cannot read {path}: run this as the user that runs HSI"
        ) from None

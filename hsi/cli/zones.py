"""`hsi zones check`: the zones file (ZONES_PATH) in force."""

from __future__ import annotations

import click

from hsi.cli.common import cli_settings, click_errors


@click.group()
def zones() -> None:
    """Zones of the cameras' pictures."""


@zones.command("check")
def zones_check() -> None:
    """Check ZONES_PATH; print each camera's zones."""
    from streams.zones import ZonesError, load_zones

    settings = cli_settings()
    with click_errors(ZonesError):
        found = load_zones(settings.zones_path)
    if settings.zones_path is None:
        click.echo("zones: none (ZONES_PATH is not set)")
        return
    click.echo(f"zones: {settings.zones_path}, version {found.version}")
    for camera, listed in sorted(found.cameras.items()):
        click.echo(f"- {camera}:")
        for zone in listed:
            corners = " ".join(f"({x:g}, {y:g})" for x, y in zone.points)
            click.echo(f"  - {zone.name} ({zone.kind}): {corners}")

"""`python -m hsi.demo`: the same command as `hsi demo` (hsi/cli.py), for a checkout without it."""

from __future__ import annotations

import sys

import click

from hsi.config import SettingsError, get_settings


@click.command("demo")
@click.option(
    "--no-wait", is_flag=True, help="Play the scene, print the summary and exit (tests, CI)."
)
@click.option(
    "--speed",
    type=click.FloatRange(0.25, 20.0),
    default=1.0,
    show_default=True,
    help="Play the scene (and the batch timeouts) this many times faster.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="API port (default: API_PORT when set, else 8000, else any free port).",
)
def main(no_wait: bool, speed: float, port: int | None) -> None:
    """Play a scene from three cameras through the whole system, then keep the API running."""
    from hsi.demo import DemoError, DemoOptions, run_demo
    from hsi.runner import STARTUP_ERRORS
    from hsi.watching import WatchError

    try:
        settings = get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    errors: tuple[type[Exception], ...] = (DemoError, WatchError, *STARTUP_ERRORS)
    try:
        report = run_demo(settings, DemoOptions(speed=speed, wait=not no_wait, port=port))
    except errors as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(report.exit_code)


if __name__ == "__main__":
    main(prog_name="hsi demo")

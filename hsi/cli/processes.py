"""The commands that run HSI: all of it in one process (`up`), or one part per process (`api`,
`worker`, `watch`, `ftp`), the demo scene, and the backfill of existing files (`ingest`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hsi.cli.common import cli_settings, click_errors, startup_errors


@click.command("up")
@click.option("--host", default=None, help="Bind address (default API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default API_PORT).")
@click.option("--no-watch", is_flag=True, help="Do not watch the camera root.")
def up(host: str | None, port: int | None, no_watch: bool) -> None:
    """Run HSI in one process: watcher, stages, reclaimers and the API."""
    from hsi.app.runner import UpOptions, run_up

    settings = cli_settings()
    with click_errors(startup_errors()):
        run_up(settings, UpOptions(host=host, port=port, watch=not no_watch))


@click.command("api")
@click.option("--host", default=None, help="Bind address (default API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve only the read-only query API and dashboard (the stages run as `hsi worker`)."""
    from hsi.app.runner import UpOptions, run_api

    settings = cli_settings()
    with click_errors(startup_errors()):
        run_api(settings, UpOptions(host=host, port=port, watch=False))


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
def demo(no_wait: bool, speed: float, port: int | None) -> None:
    """Play a scene from three cameras through the whole system, then keep the API running."""
    from hsi.demo import DemoError, DemoOptions, run_demo

    errors: tuple[type[Exception], ...] = (DemoError, *startup_errors())
    with click_errors(errors):
        report = run_demo(cli_settings(), DemoOptions(speed=speed, wait=not no_wait, port=port))
    sys.exit(report.exit_code)


STAGE_CHOICES = ("detect", "batch", "analyze", "project", "notify", "all")


@click.command("worker")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(STAGE_CHOICES),
    default=("all",),
    show_default=True,
    help="Stage(s) to run; repeatable.",
)
@click.option("--cameras", default=None, help="Only these camera ids, comma-separated.")
@click.option("--shard", default=None, help="Only shard i/n of the cameras (e.g. 0/2).")
def worker(stages: tuple[str, ...], cameras: str | None, shard: str | None) -> None:
    """Run stages for some or all cameras (scale out per stage and camera)."""
    from hsi.app.pipeline import ALL_STAGES, PipelineOptions
    from hsi.app.runner import run_worker
    from streams.names import Group
    from streams.stages.runtime import CameraSelection

    try:
        selection = CameraSelection.parse(cameras, shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    groups = ALL_STAGES if "all" in stages else tuple(Group(s) for s in dict.fromkeys(stages))
    with click_errors(startup_errors()):
        run_worker(cli_settings(), PipelineOptions(stages=groups, selection=selection))


@click.command("watch")
def watch() -> None:
    """Watch the camera root only (the other stages run elsewhere)."""
    from hsi.app.runner import run_watch

    with click_errors(startup_errors()):
        run_watch(cli_settings())


@click.command("ftp")
def ftp() -> None:
    """Run only the built-in FTP receiver (FTP_ACCOUNTS: one login per camera)."""
    from hsi.app.runner import run_ftp

    settings = cli_settings()
    if settings.ftp_accounts is None:
        raise click.ClickException("set FTP_ACCOUNTS (user:password:folder,…) to serve FTP")
    with click_errors(startup_errors()):
        run_ftp(settings)


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def ingest(paths: tuple[str, ...]) -> None:
    """Backfill files or folders under the camera root through the watcher's checks."""
    from hsi.app.runner import run_ingest

    with click_errors(startup_errors()):
        outcomes = run_ingest(cli_settings(), [Path(p) for p in paths])
    counts: dict[str, int] = {}
    for outcome in outcomes:
        kind = str(outcome.kind)
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in ("observed", "duplicate"):
            click.echo(f"{kind:<10} {outcome.path}  {outcome.reason or ''}".rstrip())
    click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no files")

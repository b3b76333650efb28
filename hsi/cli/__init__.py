"""The `hsi` command line: the composition root that reads settings and wires everything.

`main` is the command group. The small commands are here; each larger group of commands has a
module of its own (`config`, `services`, `certs`, `processes`, `read_side`, `alerts`, `zones`,
`dlq`, `export`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hsi.cli import (
    alerts,
    certs,
    config,
    dlq,
    export,
    keys,
    processes,
    read_side,
    reanalyze,
    services,
    zones,
)
from hsi.cli.common import cli_settings, run


@click.group()
@click.version_option(package_name="hsi")
def main() -> None:
    """HSI — home security intelligence: camera uploads to scored security events."""


@main.command("doctor")
def doctor() -> None:
    """Check Redis, PostgreSQL, the AI backends and the camera root; one line each."""
    from hsi.app.doctor import Status, run_checks

    verdicts = run(run_checks(cli_settings()))
    for verdict in verdicts:
        click.echo(verdict.line())
    if any(v.status is Status.FAIL for v in verdicts):
        sys.exit(1)


@main.command("docs")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs") / "api",
    show_default=True,
    help="Folder to write openapi.json and asyncapi.json into.",
)
def docs(folder: Path) -> None:
    """Write the OpenAPI (query API) and AsyncAPI (streams) documents as JSON files."""
    from hsi.api.keys import keys_required
    from hsi.app.docs import write_docs

    settings = cli_settings()
    written = write_docs(
        folder,
        prefix=settings.stream_prefix,
        keys_enabled=keys_required(settings.api_key_enabled, settings.api_host),
        rate_limited=settings.rate_limit_enabled,
    )
    for path in written:
        click.echo(f"wrote {path.as_posix()}")


@main.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks of a source checkout (`python -m benchmarks`; --help for options)."""
    import subprocess

    if not (Path.cwd() / "benchmarks" / "__main__.py").is_file():
        raise click.ClickException(
            "the benchmarks are not installed with HSI: run `hsi bench` from the root of a "
            "source checkout (the folder holding benchmarks/)"
        )
    # A process of its own: the benchmarks are a client of HSI, not a part of it.
    sys.exit(subprocess.call([sys.executable, "-m", "benchmarks", *args]))  # noqa: S603


main.add_command(config.config)
main.add_command(services.services)
main.add_command(services.migrate_command)
main.add_command(certs.certs)
main.add_command(keys.api_key)
main.add_command(processes.up)
main.add_command(processes.api)
main.add_command(processes.demo)
main.add_command(processes.worker)
main.add_command(processes.watch)
main.add_command(processes.ftp)
main.add_command(processes.ingest)
main.add_command(read_side.replay)
main.add_command(read_side.retention)
main.add_command(alerts.alerts)
main.add_command(zones.zones)
main.add_command(dlq.dlq)
main.add_command(export.export)
main.add_command(reanalyze.reanalyze)

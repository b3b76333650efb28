"""`hsi reanalyze`: replay past batches through a candidate analyzer and see what would change.

hsi reanalyze --since 7d --analyzer rules --config stricter.toml   # run, then the report
hsi reanalyze list | show RUN | resume RUN | cancel RUN | adopt RUN [--alerts]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hsi.cli.common import cli_settings, click_errors, run

if TYPE_CHECKING:
    from hsi.app.reanalysis import Session
    from streams.reanalysis.runner import Progress

T = TypeVar("T")
LEVELS = ("low", "medium", "high", "critical")


def _call(fn: Callable[[Session], Coroutine[Any, Any, T]]) -> T:
    from hsi.app.reanalysis import ReanalysisError, Session
    from hsi.app.services import running_services
    from streams.analyzers import AnalyzerError
    from streams.reanalysis.runner import RunError

    settings = cli_settings()
    _, redis_url = running_services(settings)
    if redis_url is None:
        raise click.ClickException("Redis is not running: start it with `hsi services start`")

    async def call() -> T:
        session = Session(settings, redis_url)
        try:
            return await fn(session)
        finally:
            await session.aclose()

    with click_errors(ReanalysisError, RunError, AnalyzerError):
        return run(call())


def _progress_printer() -> Callable[[Progress], None]:
    last = [0.0]

    def show(progress: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or progress.seen >= progress.total:
            last[0] = now
            click.echo(f"\r{progress.line()}", nl=False, err=True)

    return show


async def _work_and_report(
    session: Session, run_id: str, candidate: Any, concurrency: int
) -> tuple[dict[str, str], Any]:
    ended = await session.work(run_id, candidate, concurrency, _progress_printer())
    click.echo("", err=True)
    return ended, await session.report(run_id)


def _print_result(run_id: str, ended: dict[str, str], report: Any) -> None:
    reasons = sorted(set(ended.values()))
    click.echo(f"run {run_id}: {', '.join(reasons) or 'nothing to do'}")
    click.echo(report.render())
    if "budget" in reasons:
        click.echo("the token budget ran out: `hsi reanalyze resume` does not raise it")


@click.group(invoke_without_command=True)
@click.option("--since", help="Batches from this capture time: 7d, 12h, 30m or an ISO time.")
@click.option("--until", help="Batches before this capture time (same forms).")
@click.option("--camera", "cameras", multiple=True, help="Only this camera (repeatable).")
@click.option(
    "--level",
    "levels",
    multiple=True,
    type=click.Choice(LEVELS),
    help="Only batches currently at this level (repeatable).",
)
@click.option("--event", "events", multiple=True, help="Only this event id (repeatable).")
@click.option("--analyzer", type=click.Choice(["rules", "llm"]), help="The candidate analyzer.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="rules: a TOML file of weights and thresholds.",
)
@click.option("--llm-url", help="llm: another OpenAI-compatible server.")
@click.option("--model", help="llm: another model.")
@click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="llm: another system prompt.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Analyses at once (default REANALYSIS_CONCURRENCY).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(0),
    help="End the run after this many LLM tokens (default REANALYSIS_MAX_TOKENS; 0: no bound).",
)
@click.pass_context
def reanalyze(ctx: click.Context, /, **options: Any) -> None:
    """Replay past batches through a candidate analyzer and report what would change.

    The run never changes the current analyses and never alerts; `adopt` does."""
    if ctx.invoked_subcommand is not None:
        return
    if options["analyzer"] is None:
        raise click.UsageError("choose the candidate: --analyzer rules or --analyzer llm")
    from hsi.app.reanalysis import (
        CandidateOptions,
        ReanalysisError,
        build_candidate,
        selection_of,
    )

    settings = cli_settings()
    with click_errors(ReanalysisError):
        candidate = build_candidate(
            settings,
            CandidateOptions(
                options["analyzer"],
                options["config"],
                options["llm_url"],
                options["model"],
                options["prompt_file"],
            ),
        )
        selection = selection_of(
            cameras=options["cameras"],
            since=options["since"],
            until=options["until"],
            levels=options["levels"],
            events=options["events"],
            now=datetime.now().astimezone(),
        )

    budget = options["max_tokens"]
    if budget is None:
        budget = settings.reanalysis_max_tokens
    concurrency = options["concurrency"] or settings.reanalysis_concurrency

    async def go(session: Session) -> tuple[str, dict[str, str], Any]:
        run_id = await session.start(candidate, selection, budget or None)
        click.echo(f"run {run_id}: {selection.describe()}", err=True)
        ended, report = await _work_and_report(session, run_id, candidate, concurrency)
        return run_id, ended, report

    run_id, ended, report = _call(go)
    _print_result(run_id, ended, report)


@reanalyze.command("resume")
@click.argument("run_id")
@click.option("--analyzer", type=click.Choice(["rules", "llm"]), required=True)
@click.option("--config", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--llm-url")
@click.option("--model")
@click.option("--prompt-file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--concurrency", type=click.IntRange(1, 64))
def resume(run_id: str, concurrency: int | None, **options: Any) -> None:
    """Go on with a run that stopped (the same candidate options as its start)."""
    from hsi.app.reanalysis import CandidateOptions, ReanalysisError, build_candidate
    from streams.reanalysis.runner import config_hash, run_cameras

    settings = cli_settings()
    with click_errors(ReanalysisError):
        candidate = build_candidate(settings, CandidateOptions(**options))

    async def go(session: Session) -> tuple[dict[str, str], Any]:
        states = await run_cameras(session.redis, session.names, await session.cameras(), run_id)
        recorded = {s.started.config_hash for s in states.values() if s.started}
        if recorded and recorded != {config_hash(candidate.description)}:
            raise ReanalysisError(
                f"run {run_id} was started with another candidate; give the same options"
            )
        return await _work_and_report(
            session, run_id, candidate, concurrency or settings.reanalysis_concurrency
        )

    ended, report = _call(go)
    _print_result(run_id, ended, report)


@reanalyze.command("show")
@click.argument("run_id")
@click.option("--alert-from", type=click.Choice(LEVELS), default="high", show_default=True)
def show(run_id: str, alert_from: str) -> None:
    """The report of a run: level transitions, score shift, alerts that would change, cost."""

    async def go(session: Session) -> tuple[dict[str, Any], Any]:
        return await session.describe(run_id), await session.report(run_id, alert_from)

    described, report = _call(go)
    click.echo(
        f"run {described['run']}: {described['analyzer']}"
        + (f" ({described['model']})" if described["model"] else "")
        + f", {described['selection']}"
    )
    for camera, state in described["cameras"].items():
        click.echo(f"  {camera}: {state}")
    click.echo(report.render())


@reanalyze.command("list")
def list_runs() -> None:
    """Every run on the streams, newest first."""

    async def go(session: Session) -> list[dict[str, Any]]:
        return await session.runs()

    for item in _call(go):
        model = f" ({item['model']})" if item["model"] else ""
        click.echo(
            f"{item['run']}  {item['analyzer']}{model}  {item['cameras']} cameras  "
            f"{item['selection']}"
        )


@reanalyze.command("cancel")
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Stop a run: its worker stops at the next read; nothing it wrote is undone."""

    async def go(session: Session) -> int:
        return await session.cancel(run_id)

    click.echo(f"cancelled run {run_id} on {_call(go)} cameras")


@reanalyze.command("adopt")
@click.argument("run_id")
@click.option("--alerts", is_flag=True, help="Let the adopted judgements alert (off: history).")
def adopt_run(run_id: str, alerts: bool) -> None:
    """Make a run's judgements the current analyses (new analyses naming those they replace)."""

    async def go(session: Session) -> dict[str, int]:
        return await session.adopt(run_id, alerts)

    written = _call(go)
    click.echo(f"adopted run {run_id}: {sum(written.values())} analyses")
    for camera, count in written.items():
        click.echo(f"  {camera}: {count}")

"""`hsi export`: events as an evidence zip, and `hsi export verify` to check one."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from hsi.cli.common import cli_settings, click_errors
from hsi.cli.read_side import read_side_call


def _filters(
    camera: str | None,
    since: str | None,
    until: str | None,
    levels: tuple[str, ...],
    min_score: int | None,
    object_types: tuple[str, ...],
) -> Any:
    from hsi.api.params import (
        parse_camera_id,
        parse_choices,
        parse_labels,
        parse_time_range,
    )
    from hsi.api.queries.events import RISK_LEVELS, EventFilters

    window = parse_time_range(since, until)
    return EventFilters(
        camera_id=parse_camera_id("camera", camera),
        risk_levels=parse_choices("risk-level", levels, RISK_LEVELS),
        min_score=min_score,
        object_types=parse_labels("object-type", object_types),
        since=window.since,
        until=window.until,
    )


async def _plan(engine: Any, _redis: Any, names: Any, **kwargs: Any) -> Any:
    from hsi.api.export.plan import build_plan, select_events

    async with engine.connect() as conn:
        ids = kwargs["event_ids"] or await select_events(conn, kwargs["filters"])
        if not ids:
            return None
        return await build_plan(
            conn, ids, kwargs["config"], names, kwargs["now"], kwargs["selection"]
        )


@click.group(invoke_without_command=True)
@click.option("--camera", help="Only this camera (its id, e.g. front_door).")
@click.option("--since", help="Events whose window starts at or after this (ISO 8601; UTC).")
@click.option("--until", help="Events whose window starts before this (ISO 8601; UTC).")
@click.option("--risk-level", "levels", multiple=True, help="Only these levels (repeatable).")
@click.option("--min-score", type=click.IntRange(0, 100), help="Risk score at least this.")
@click.option("--object-type", "object_types", multiple=True, help="Saw any of these objects.")
@click.option("--event", "events", multiple=True, help="These events (ids; repeatable).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The zip to write.")
@click.pass_context
def export(
    ctx: click.Context,
    camera: str | None,
    since: str | None,
    until: str | None,
    levels: tuple[str, ...],
    min_score: int | None,
    object_types: tuple[str, ...],
    events: tuple[str, ...],
    out: Path | None,
) -> None:
    """Write events as an evidence zip: original files, pictures with boxes, event.json,
    summary.txt and SHA256SUMS. Selects like GET /api/events (or --event ids)."""
    if ctx.invoked_subcommand is not None:
        return
    from hsi.api.export.archive import write_zip
    from hsi.api.export.plan import ExportError, check_size
    from hsi.api.responses import BadParameter
    from hsi.settings.components import export_config

    if out is None:
        raise click.UsageError("--out is required: the zip to write")
    chosen = {
        k: v
        for k, v in {
            "camera": camera,
            "since": since,
            "until": until,
            "risk_level": ",".join(levels),
            "min_score": min_score,
            "object_type": ",".join(object_types),
            "event": ",".join(events),
        }.items()
        if v not in (None, "")
    }
    if events and len(chosen) > 1:
        raise click.UsageError("give either --event ids or filters, not both")
    event_ids = []
    for raw in events:
        try:
            event_ids.append(uuid.UUID(raw))
        except ValueError:
            message = f"{raw!r} is not an event id (a UUID)"
            raise click.BadParameter(message, param_hint="--event") from None
    with click_errors(BadParameter):
        filters = _filters(camera, since, until, levels, min_score, object_types)
    config = export_config(cli_settings())
    started = time.monotonic()
    with click_errors(ExportError):
        plan = read_side_call(
            _plan,
            event_ids=event_ids,
            filters=filters,
            config=config,
            now=datetime.now(UTC),
            selection=chosen,
        )
        if plan is None:
            raise click.ClickException("no event matches the selection: nothing to export")
        check_size(plan, config.max_bytes)
        size = write_zip(plan, config, out)
    originals = plan.originals()
    click.echo(
        f"wrote {out} ({size / 1024 / 1024:.1f} MB): {len(plan.events)} events, "
        f"{len(originals)} original files, in {time.monotonic() - started:.1f} s"
    )


async def _database_check(engine: Any, _redis: Any, _names: Any, **kwargs: Any) -> Any:
    from hsi.api.export.verify import database_digests

    async with engine.connect() as conn:
        return await database_digests(conn, kwargs["originals"])


@export.command("verify")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, help="Do not compare with the database's digests.")
def verify(archive: Path, offline: bool) -> None:
    """Check an export: SHA256SUMS covers every file and matches, and every original file has
    the SHA-256 recorded when it arrived (event.json; and PostgreSQL, unless --offline)."""
    from hsi.api.export.verify import database_problems, verify_zip

    result = verify_zip(archive)
    against = "event.json"
    if not offline and result.originals:
        try:
            recorded = read_side_call(_database_check, originals=result.originals)
        except click.ClickException as exc:
            result.notes.append(f"database not reachable ({exc.message}): not compared with it")
        else:
            problems, notes = database_problems(result.originals, recorded)
            result.problems += problems
            result.notes += notes
            against = "event.json and the database"
    for note in result.notes:
        click.echo(f"note: {note}")
    for problem in result.problems:
        click.echo(f"FAILED: {problem}")
    if not result.ok:
        click.echo(f"{archive}: {len(result.problems)} problems", err=True)
        sys.exit(1)
    click.echo(
        f"OK: {result.members} files match SHA256SUMS; {len(result.originals)} original files "
        f"match the digests recorded when they arrived ({against})"
    )

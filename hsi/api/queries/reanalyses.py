"""Re-analysis runs as projected from the cameras' reanalyses streams: the runs, and one run's
report (level transitions, score shift, alert crossings, cost) with its changed events, paged
by event id."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Row, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api import links
from hsi.api.cursor import Cursor
from hsi.api.queries.paging import Page, make_page
from hsi.api.responses import iso, stored_error
from projections.tables import events, reanalysis_results, reanalysis_runs

CURSOR_KIND = "reanalysis"
RUN_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
LEVELS = ("low", "medium", "high", "critical")
CROSSINGS = ("up", "down")
_EPOCH = "1970-01-01T00:00:00+00:00"


def _status(row: Row[Any]) -> str:
    ended = row.cameras_completed + row.cameras_cancelled + row.cameras_over_budget
    if row.cameras and ended < row.cameras:
        return "running"
    if row.cameras_cancelled:
        return "cancelled"
    if row.cameras_over_budget:
        return "over_budget"
    return "completed"


def run_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": _status(row),
        "analyzer": row.analyzer,
        "model": row.model,
        "config_hash": row.config_hash,
        "selection": row.selection,
        "max_tokens": row.max_tokens,
        "cameras": row.cameras,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "analyzed": row.analyzed,
        "failed": row.failed,
        "cost": {
            "calls": row.analyzed + row.failed,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "seconds": round(row.latency_us / 1e6, 3),
        },
        "adopted": row.adopted,
        "adopted_at": iso(row.adopted_at),
        "links": {"self": f"/api/reanalyses/{row.id}"},
    }


async def list_runs(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    query = (
        select(reanalysis_runs)
        .order_by(reanalysis_runs.c.started_at.desc().nulls_last(), reanalysis_runs.c.id.desc())
        .limit(limit)
    )
    return [run_item(row) for row in (await conn.execute(query)).all()]


def _alerting(level: Any, alert_from: str) -> Any:
    return level.in_(LEVELS[LEVELS.index(alert_from) :])


async def run_report(
    conn: AsyncConnection, run_id: str, alert_from: str = "high"
) -> dict[str, Any] | None:
    """The run and its report, or None when there is no such run."""
    row = (
        await conn.execute(select(reanalysis_runs).where(reanalysis_runs.c.id == run_id))
    ).first()
    if row is None:
        return None
    r = reanalysis_results.c
    judged = and_(r.run_id == run_id, r.status == "completed")
    current = func.coalesce(r.current_level, "none").label("from_level")
    matrix_rows = (
        await conn.execute(
            select(current, r.risk_level, func.count())
            .where(judged)
            .group_by(current, r.risk_level)
        )
    ).all()
    shift = r.risk_score - r.current_score
    stats = (
        await conn.execute(
            select(
                func.percentile_cont(0.5).within_group(shift),
                func.percentile_cont(0.9).within_group(func.abs(shift)),
                func.count().filter(_changed()),
                func.count().filter(
                    and_(
                        _alerting(r.risk_level, alert_from),
                        or_(r.current_level.is_(None), ~_alerting(r.current_level, alert_from)),
                    )
                ),
                func.count().filter(
                    and_(
                        _alerting(r.current_level, alert_from),
                        ~_alerting(r.risk_level, alert_from),
                    )
                ),
            ).where(judged)
        )
    ).one()
    median, p90, changed, raised, lowered = stats
    return {
        **run_item(row),
        "report": {
            "alert_from": alert_from,
            "matrix": [
                {"current": current, "candidate": candidate, "events": count}
                for current, candidate, count in sorted(matrix_rows, key=_matrix_order)
            ],
            "changed": changed,
            "score_shift": {
                "median": None if median is None else float(median),
                "p90_abs": None if p90 is None else float(p90),
            },
            "would_alert": raised,
            "would_no_longer_alert": lowered,
        },
    }


def _matrix_order(row: Any) -> tuple[int, int]:
    order = ("none", *LEVELS)
    return order.index(row[0]), order.index(row[1])


def _changed() -> Any:
    r = reanalysis_results.c
    return or_(
        r.risk_level.is_distinct_from(r.current_level),
        r.risk_score.is_distinct_from(r.current_score),
    )


def change_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "event_id": str(row.event_id),
        "camera_id": row.camera_id,
        "window_start": iso(row.window_start),
        "object_types": list(row.object_types or ()),
        "status": row.status,
        "current": {"risk_score": row.current_score, "risk_level": row.current_level},
        "candidate": {
            "risk_score": row.risk_score,
            "risk_level": row.risk_level,
            "summary": row.summary,
            "reasoning": row.reasoning,
        },
        "error": stored_error(row.error),
        "analyzed_at": iso(row.analyzed_at),
        "links": {"event": links.event_url(row.event_id)},
    }


async def changed_events(
    conn: AsyncConnection,
    run_id: str,
    crossing: str | None,
    alert_from: str,
    limit: int,
    after: Cursor | None,
) -> Page:
    """The run's events whose judgement would change (and its failures), by event id."""
    r = reanalysis_results.c
    where = [r.run_id == run_id, or_(r.status == "failed", _changed())]
    if crossing == "up":
        where.append(_alerting(r.risk_level, alert_from))
        where.append(or_(r.current_level.is_(None), ~_alerting(r.current_level, alert_from)))
    elif crossing == "down":
        where += [_alerting(r.current_level, alert_from), ~_alerting(r.risk_level, alert_from)]
    if after is not None:
        where.append(r.event_id > uuid.UUID(after.key[0]))
    query = (
        select(
            reanalysis_results,
            events.c.window_start,
            events.c.object_types,
        )
        .select_from(
            reanalysis_results.outerjoin(events, events.c.id == reanalysis_results.c.event_id)
        )
        .where(*where)
        .order_by(r.event_id)
        .limit(limit + 1)
    )
    rows = (await conn.execute(query)).all()
    return make_page(
        rows,
        limit,
        change_item,
        lambda row: Cursor(CURSOR_KIND, row.analyzed_at, (str(row.event_id),)),
    )

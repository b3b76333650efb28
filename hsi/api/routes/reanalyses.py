"""GET /api/reanalyses (the runs of `hsi reanalyze`) and /api/reanalyses/{run_id} (a run's
report, with its changed events keyset-paged)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hsi.api.cursor import decode_cursor
from hsi.api.endpoint import CURSOR, LIMIT, Endpoint, Param, path_param
from hsi.api.params import Query, parse_choices, parse_limit
from hsi.api.queries import reanalyses as q
from hsi.api.responses import JSON, BadParameter, NotFound
from hsi.api.state import resources


async def runs_list(request: Request, query: Query) -> Response:
    """Re-analysis runs, newest first."""
    limit = parse_limit(query.get("limit"))
    async with resources(request).engine.connect() as conn:
        return JSON({"items": await q.list_runs(conn, limit)})


def _one(query: Query, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    chosen = parse_choices(name, query.get_list(name), allowed)
    if len(chosen) > 1:
        raise BadParameter(name, "give one value")
    return chosen[0] if chosen else default


async def run_detail(request: Request, query: Query) -> Response:
    """One run: its record, its report, and a page of the events it would change."""
    run_id = request.path_params["run_id"]
    if not q.RUN_ID.match(run_id):
        raise NotFound(f"no re-analysis run {run_id!r}")
    alert_from = _one(query, "alert_from", q.LEVELS, "high")
    crossing = _one(query, "crossing", q.CROSSINGS, None)
    limit = parse_limit(query.get("limit"))
    token = query.get("cursor")
    after = None if token is None else decode_cursor(token, q.CURSOR_KIND, 1)
    assert alert_from is not None
    async with resources(request).engine.connect() as conn:
        found = await q.run_report(conn, run_id, alert_from)
        if found is None:
            raise NotFound(f"no re-analysis run {run_id!r}")
        page = await q.changed_events(conn, run_id, crossing, alert_from, limit, after)
    return JSON({**found, "changes": page.body()})


_ALERT_FROM = Param(
    "alert_from",
    "The alert threshold of the report: the lowest level that alerts (default `high`).",
    {"type": "string", "enum": list(q.LEVELS)},
)
_CROSSING = Param(
    "crossing",
    "Only the events that would cross the alert threshold: `up` (would now alert) or `down` "
    "(would no longer alert).",
    {"type": "string", "enum": list(q.CROSSINGS)},
)

ENDPOINTS = (
    Endpoint(
        "/api/reanalyses",
        runs_list,
        "Re-analysis runs (`hsi reanalyze`), newest first, with their cost and adoption.",
        "reanalyses",
        params=(LIMIT,),
        responses={200: '`{"items": [...]}`', 400: "A bad parameter (named in `parameter`)."},
    ),
    Endpoint(
        "/api/reanalyses/{run_id}",
        run_detail,
        "One run: its record, the report (level transitions current → candidate, score shift, "
        "events that would cross the alert threshold either way) and `changes`, a page of the "
        "events whose judgement would change (and those the candidate failed on), by event id.",
        "reanalyses",
        params=(
            path_param("run_id", "The run id, as `hsi reanalyze` printed it."),
            _ALERT_FROM,
            _CROSSING,
            LIMIT,
            CURSOR,
        ),
        responses={
            200: "The run, its report and a page of changes.",
            400: "A bad parameter.",
            404: "No such run.",
        },
    ),
)

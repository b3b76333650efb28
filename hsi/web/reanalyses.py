"""The re-analysis pages: the runs (`/reanalyses`) and one run's report (`/reanalyses/{run}`):
the level transitions, the score shift, and the events that would cross the alert threshold,
each with its picture and both judgements side by side."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hsi.api.queries import reanalyses as q
from hsi.api.state import resources
from hsi.web import data
from hsi.web.site import Site

SHOWN = 24  # events per crossing direction on the page (the API pages through all)


def matrix_table(matrix: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transition rows (current level → counts per candidate level), in level order."""
    counts = {(m["current"], m["candidate"]): m["events"] for m in matrix}
    rows = []
    for current in ("none", *q.LEVELS):
        cells = [counts.get((current, candidate), 0) for candidate in q.LEVELS]
        if current != "none" or any(cells):
            rows.append({"current": current, "cells": cells, "total": sum(cells)})
    return rows


def reanalysis_routes(site: Site) -> list[BaseRoute]:
    render = site.render

    async def runs_page(request: Request) -> Response:
        async with resources(request).engine.connect() as conn:
            runs = await q.list_runs(conn, 100)
        return render.page(
            request,
            "reanalyses.html",
            {"title": "Re-analysis", "current": "/reanalyses", "runs": runs},
        )

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        async with resources(request).engine.connect() as conn:
            found = await q.run_report(conn, run_id) if q.RUN_ID.match(run_id) else None
            if found is None:
                return render.page(
                    request,
                    "not_found.html",
                    {
                        "title": "No such run",
                        "current": "/reanalyses",
                        "what": f"re-analysis run {run_id}",
                    },
                    status_code=404,
                )
            crossings = {}
            for direction in q.CROSSINGS:
                page = await q.changed_events(conn, run_id, direction, "high", SHOWN, None)
                crossings[direction] = page
            ids = [c["event_id"] for page in crossings.values() for c in page.items]
            covers = await data.event_covers(conn, ids)
            names = await data.camera_names(conn)
        return render.page(
            request,
            "reanalysis.html",
            {
                "title": f"Re-analysis {run_id}",
                "current": "/reanalyses",
                "run": found,
                "matrix": matrix_table(found["report"]["matrix"]),
                "levels": q.LEVELS,
                "crossings": crossings,
                "covers": covers,
                "names": names,
            },
        )

    page = site.gate.page
    return [
        Route("/reanalyses", page(runs_page), methods=["GET"], name="web_reanalyses"),
        Route("/reanalyses/{run_id}", page(run_page), methods=["GET"], name="web_reanalysis"),
    ]

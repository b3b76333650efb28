"""The pipeline pages: Charts (`/charts`) and System (`/system`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hsi.api.queries.dead_letters import list_dead_letters
from hsi.api.queries.events import hour_slots
from hsi.api.queries.streams import camera_ids, stream_health, streams_report
from hsi.api.state import resources
from hsi.web import charts, data, health
from hsi.web import format as fmt
from hsi.web.site import Site

RANGES: dict[str, tuple[str, timedelta, int, str]] = {
    # name: (heading, span, label every n-th hour, the latency route's window)
    "day": ("Last 24 hours", timedelta(hours=24), 3, "1d"),
    "week": ("Last 7 days", timedelta(days=7), 24, "7d"),
}
LATENCY_PATH = "/api/pipeline/latency"


def hour_columns(
    counts: dict[tuple[datetime, str], int],
    start: datetime,
    end: datetime,
    zone: tzinfo,
    label_every: int,
) -> list[charts.BarColumn]:
    """One column per hour of [start, end) with its counts per level, every n-th labelled."""
    columns = []
    labelled: datetime | None = None
    for index, hour in enumerate(hour_slots(start, end)):
        label = ""
        if index % label_every == 0:
            label = fmt.hour_label(hour, zone, labelled)
            labelled = hour
        per_level = {level: counts.get((hour, level), 0) for level in fmt.LEVEL_ORDER}
        title = fmt.format_time(hour, zone, seconds=False)
        columns.append(charts.BarColumn(label, title, per_level))
    return columns


def level_chart(columns: list[charts.BarColumn], heading: str) -> str:
    total = sum(sum(c.counts.values()) for c in columns)
    return charts.stacked_bars_svg(
        columns,
        chart_id="events-per-hour",
        title=f"Events per hour by risk level, {heading.lower()}",
        description=f"{total} events in {len(columns)} hours; each bar is one hour, stacked by "
        "risk level from low (bottom) to not scored (top).",
        order=fmt.LEVEL_ORDER,
        colours={k: s.colour for k, s in fmt.LEVEL_STYLES.items()},
        names={k: s.label for k, s in fmt.LEVEL_STYLES.items()},
        legend=False,  # the page's caption is the legend, with the totals
    )


def lag_chart(stages: list[health.StageLag]) -> str:
    items = [
        (s.stage, float(s.lag + s.pending), f"{s.lag} lag + {s.pending} pending") for s in stages
    ]
    return charts.horizontal_bars_svg(
        items,
        chart_id="stream-lag",
        title="Entries waiting per consumer group",
        description="For each consumer group and the stream it reads, summed over cameras: "
        "entries not yet delivered (lag) plus delivered but not yet acknowledged (pending).",
    )


def latency_chart(rows: list[health.StageLatency]) -> str:
    items = [
        (
            r.stage,
            r.p95 or 0.0,
            "no samples"
            if r.p95 is None
            else f"p50 {fmt.format_seconds(r.p50)} · p95 {fmt.format_seconds(r.p95)}",
        )
        for r in rows
    ]
    return charts.horizontal_bars_svg(
        items,
        chart_id="stage-latency",
        title="Latency per stage (95th percentile)",
        description="For each pipeline stage and end to end: the time 95 of 100 entries took "
        "at most, over the chosen range; the label also gives the median.",
        colour="#5b3f99",
    )


def status_routes(site: Site) -> list[BaseRoute]:
    render = site.render
    web = site.web

    async def charts_page(request: Request) -> Response:
        """Events per hour by risk level, stream lag, and per-stage latency when available."""
        name = request.query_params.get("range", "day")
        if name not in RANGES:
            name = "day"
        heading, span, every, window = RANGES[name]
        res = resources(request)
        end = datetime.now(UTC)
        start = end - span
        async with res.engine.connect() as conn:
            counts = await data.hourly_levels(conn, start, end)
        columns = hour_columns(counts, start, end, web.timezone, every)
        totals = {level: sum(c.counts.get(level, 0) for c in columns) for level in fmt.LEVEL_ORDER}
        cameras = await camera_ids(res.redis, res.names)
        stages = health.lag_by_stage(await stream_health(res.redis, res.names, cameras))
        latency = await health.internal_get(request, LATENCY_PATH, f"window={window}")
        stage_latency = health.latency_rows(latency.body) if latency.status == 200 else None
        return render.page(
            request,
            "charts.html",
            {
                "title": "Charts",
                "current": "/charts",
                "range": name,
                "ranges": RANGES,
                "heading": heading,
                "events_svg": level_chart(columns, heading),
                "totals": totals,
                "busiest": sorted(
                    (c for c in columns if sum(c.counts.values())),
                    key=lambda c: -sum(c.counts.values()),
                )[:10],
                "stages": stages,
                "lag_svg": lag_chart(stages) if any(s.lag or s.pending for s in stages) else None,
                "latency": health.flatten(latency.body) if latency.status == 200 else None,
                "stage_latency": stage_latency,
                "latency_svg": latency_chart(stage_latency) if stage_latency else None,
                "latency_path": LATENCY_PATH,
            },
        )

    async def system_page(request: Request) -> Response:
        """Readiness of Redis, PostgreSQL and the AI backends; stream and group health."""
        res = resources(request)
        ready = await health.internal_get(request, "/ready")
        backends = await health.probe_backends(web.backends, web.probe_timeout_seconds)
        cameras = await camera_ids(res.redis, res.names)
        streams = await stream_health(res.redis, res.names, cameras)
        report = streams_report(streams, cameras)
        async with res.engine.connect() as conn:
            dead = await list_dead_letters(conn, None, 10, None)
        return render.page(
            request,
            "system.html",
            {
                "title": "System",
                "current": "/system",
                "checks": health.readiness_rows(ready) + backends,
                "ready_status": ready.body.get("status") if isinstance(ready.body, dict) else None,
                "backends_known": bool(web.backends),
                "streams": streams,
                "totals": report["totals"],
                "dead_per_camera": {c["camera_id"]: c["dead_letters"] for c in report["cameras"]},
                "dead_letters": dead.items,
            },
        )

    page = site.gate.page
    return [
        Route("/charts", page(charts_page), methods=["GET"], name="web_charts"),
        Route("/system", page(system_page), methods=["GET"], name="web_system"),
    ]

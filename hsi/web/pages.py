"""The event pages: Live (`/`), Events (`/events`, `/events/{id}`), Cameras (`/cameras`), and
the card fragment the live page fetches (`/ui/fragments/events/{id}`).

Every page is complete server-rendered HTML; the live page's script only adds new cards.
Data comes from `hsi.api.queries` (the same functions as the JSON API) plus `hsi.web.data`.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from hsi.api.cursor import Cursor, decode_cursor, rank_key
from hsi.api.params import parse_uuid
from hsi.api.queries import events as q
from hsi.api.queries.cameras import list_cameras
from hsi.api.queries.search import EventSearch, search_events
from hsi.api.responses import BadParameter
from hsi.api.routes.events import event_in_path
from hsi.api.state import resources
from hsi.web import data
from hsi.web import format as fmt
from hsi.web.clips import moments
from hsi.web.data import Cover
from hsi.web.forms import EventForm, parse_event_form, parse_local_time
from hsi.web.render import SECURITY_HEADERS
from hsi.web.site import Site


def cover_alt(
    event: dict[str, Any], cover: Cover | None, zone: tzinfo, camera: str | None = None
) -> str:
    """The alt text of an event's picture: what, where (`camera`: the camera's name), when, and
    whether boxes are drawn."""
    when = fmt.format_time(event.get("window_start"), zone)
    where = camera or event["camera_id"]
    if cover is None:
        return ""
    if cover.detection_id is None:
        return f"Picture from {where} at {when}, nothing detected in it"
    seen = ", ".join(event.get("object_types") or ()) or (cover.label or "object")
    return f"Picture from {where} at {when} with boxes around: {seen}"


def cover_from_detail(detail: dict[str, Any]) -> Cover | None:
    """The cover of an event from its detail (`q.get_event`): as `data.event_covers` picks it."""
    found = sorted(detail["detections"], key=lambda d: (-d["confidence"], d["id"]))
    if found:
        best = found[0]
        return Cover(
            detail["camera_id"],
            best["id"],
            best["path"],
            "image",
            best["label"],
            best["confidence"],
        )
    for file in detail["files"]:
        if file.get("path"):
            return Cover(
                detail["camera_id"], None, file["path"], file.get("media_kind"), None, None
            )
    return None


def file_views(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's files in order, each with its detections, the detection whose thumbnail
    shows the file with every box drawn (its most confident one; for a video, on the frame it
    was seen in) and, for a video, its moments (the sampled frames where objects were found)."""
    per_entry: dict[str, list[dict[str, Any]]] = {}
    for item in detail["detections"]:
        per_entry.setdefault(item["detection_entry_id"], []).append(item)
    views = []
    for file in detail["files"]:
        found = per_entry.get(file["detection_entry_id"], [])
        best = max(found, key=lambda d: d["confidence"], default=None)
        views.append(
            {
                **file,
                "detections": found,
                "thumbnail_of": best and best["id"],
                "moments": moments(found) if file.get("media_kind") == "video" else [],
            }
        )
    return views


def _card(
    site: Site, event: dict[str, Any], cover: Cover | None, names: dict[str, str]
) -> dict[str, Any]:
    camera = names.get(event["camera_id"], event["camera_id"])
    return {
        "e": event,
        "camera": camera,
        "cover": cover,
        "alt": cover_alt(event, cover, site.web.timezone, camera),
    }


async def _camera_names(request: Request) -> dict[str, str]:
    async with resources(request).engine.connect() as conn:
        return await data.camera_names(conn)


_STALE_PAGE = "That page link is out of date; showing the newest events."


def _page_cursors(form: EventForm) -> tuple[Cursor | None, Cursor | None]:
    """The cursors of the page the form asks for: `after` (older) or `before` (newer). A link
    that is out of date gives neither, and a note in `form.errors`."""
    after = before = None
    try:
        if form.cursor:
            after = decode_cursor(form.cursor, q.CURSOR_KIND, 1)
        elif form.before:
            before = decode_cursor(form.before, q.CURSOR_KIND, 1)
    except BadParameter:
        form.errors["page"] = _STALE_PAGE
    for cursor in (after, before):
        if cursor is not None and parse_uuid(cursor.key[0]) is None:
            form.errors["page"] = _STALE_PAGE
            after = before = None
    return after, before


def _search_cursor(form: EventForm, found: EventSearch) -> Cursor | None:
    """The cursor of the search results page the form asks for (searches page forward only);
    one of another search or listing gives none, and a note in `form.errors`."""
    if not form.cursor:
        return None
    try:
        after = decode_cursor(form.cursor, found.cursor_kind, 2)
    except BadParameter:
        after = None
    if after is None or rank_key(after) is None:
        form.errors["page"] = "That page link is out of date; showing the best matches."
        return None
    return after


class _EventPages:
    """The handlers of the event pages of one site."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.render = site.render
        self.web = site.web

    async def live(self, request: Request) -> Response:
        """The newest events; the script adds new ones as the live feed announces them."""
        web = self.web
        async with resources(request).engine.connect() as conn:
            page = await q.list_events(conn, q.EventFilters(), web.live_count, None)
            covers = await data.event_covers(conn, [e["id"] for e in page.items])
            names = await data.camera_names(conn)
        cards = [_card(self.site, e, covers.get(e["id"]), names) for e in page.items]
        return self.render.page(
            request,
            "live.html",
            {"title": "Live", "current": "/", "cards": cards, "live_count": web.live_count},
        )

    async def fragment(self, request: Request) -> Response:
        """One event card (an `<li>`), for the live page's script; 404 until it is projected."""
        detail = await event_in_path(request)
        if detail is None or detail["window_start"] is None:
            return HTMLResponse("", status_code=404, headers=SECURITY_HEADERS)
        context = _card(self.site, detail, cover_from_detail(detail), await _camera_names(request))
        return HTMLResponse(self.render.html("_card.html", context), headers=SECURITY_HEADERS)

    async def events(self, request: Request) -> Response:
        """Filtered events, newest first, a page at a time in both directions; a search shows
        the best matches first, a page at a time forward."""
        web = self.web
        form, filters = parse_event_form(request.query_params.multi_items(), web.timezone)
        size = web.page_size
        res = resources(request)
        text = form.search
        found = None if text is None else EventSearch(text, res.config.search_language)
        after, before = (
            _page_cursors(form) if found is None else (_search_cursor(form, found), None)
        )
        search_next = None  # a search pages forward by the API's own cursors
        async with res.engine.connect() as conn:
            if found is not None:
                ranked = await search_events(conn, filters, found, size, after)
                items, has_newer, has_older = ranked.items, False, ranked.has_more
                search_next = ranked.next_cursor
            elif before is not None:
                newer = await data.events_before(conn, filters, size, before)
                items, has_newer, has_older = newer.items, newer.has_newer, True
            else:
                page = await q.list_events(conn, filters, size, after)
                items, has_newer, has_older = page.items, after is not None, page.has_more
            covers = await data.event_covers(conn, [e["id"] for e in items])
            cameras = await data.camera_names(conn)
            types = await data.object_types(conn)
        newer_url = older_url = None
        if items and has_newer:
            newer_url = "/events?" + form.query(before=data.cursor_of(items[0]))
        if items and has_older:
            older = search_next if found is not None else data.cursor_of(items[-1])
            older_url = "/events?" + form.query(cursor=older or "")
        first_url = "/events?" + form.query() if (after or (before and has_newer)) else None
        return self.render.page(
            request,
            "events.html",
            {
                "title": "Events",
                "current": "/events",
                "form": form,
                "cameras": cameras,
                "object_types": types,
                "risk_levels": q.RISK_LEVELS,
                "cards": [_card(self.site, e, covers.get(e["id"]), cameras) for e in items],
                "newer_url": newer_url,
                "older_url": older_url,
                "first_url": first_url,
                "since_value": _input_time(form.since, web.timezone),
                "until_value": _input_time(form.until, web.timezone),
            },
            status_code=400 if form.errors else 200,
        )

    async def event(self, request: Request) -> Response:
        """One event: every picture with its boxes, the detections and the analysis."""
        detail = await event_in_path(request)
        if detail is None:
            return self.render.page(
                request,
                "not_found.html",
                {
                    "title": "No such event",
                    "current": "/events",
                    "what": f"event {request.path_params['event_id']}",
                },
                status_code=404,
            )
        camera = (await _camera_names(request)).get(detail["camera_id"], detail["camera_id"])
        return self.render.page(
            request,
            "event.html",
            {
                "title": f"Event at {camera}",
                "current": "/events",
                "e": detail,
                "camera": camera,
                "files": file_views(detail),
                "zones": [
                    {
                        "name": zone.name,
                        "kind": zone.kind,
                        "points": " ".join(f"{x * 100:g},{y * 100:g}" for x, y in zone.points),
                    }
                    for zone in self.web.zones.of(detail["camera_id"])
                ],
            },
        )

    async def cameras(self, request: Request) -> Response:
        """Every camera with its latest picture, last activity, and today's files and events."""
        now = datetime.now(UTC)
        since = fmt.day_start(now, self.web.timezone)
        held = resources(request)
        async with held.engine.connect() as conn:
            found = await list_cameras(conn, held.config.clock_tolerance_seconds)
            today = await data.today_counts(conn, since)
        return self.render.page(
            request,
            "cameras.html",
            {
                "title": "Cameras",
                "current": "/cameras",
                "cameras": found,
                "today": today,
                "empty_today": data.Today(),
                "since": since,
            },
        )


def page_routes(site: Site) -> list[BaseRoute]:
    pages = _EventPages(site)
    page, resource = site.gate.page, site.gate.resource
    return [
        Route("/", page(pages.live), methods=["GET"], name="web_live"),
        Route("/events", page(pages.events), methods=["GET"], name="web_events"),
        Route("/events/{event_id}", page(pages.event), methods=["GET"], name="web_event"),
        Route("/cameras", page(pages.cameras), methods=["GET"], name="web_cameras"),
        Route(
            "/ui/fragments/events/{event_id}",
            resource(pages.fragment),
            methods=["GET"],
            name="web_event_fragment",
        ),
    ]


def _input_time(text: str, zone: tzinfo) -> str:
    """What a datetime-local input can show for the typed value (empty when it cannot)."""
    try:
        return fmt.datetime_local_value(parse_local_time(text, zone), zone) if text else ""
    except ValueError:
        return ""

"""The dashboard's pages over HTTP (the app's lifespan, rows inserted directly): what each page
shows without JavaScript, filters and paging, pictures and pipeline health (keys: test_keys)."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.settings.components import ai_backends
from hsi.settings.model import Settings
from hsi.web import WebConfig
from hsi.web.format import day_start
from hsi.web.status import LATENCY_PATH
from streams.zones import parse_zones
from tests.api.rows import event_row, insert
from tests.web.conftest import MakeConfig, serve, web_app
from tests.web.home import Home, Markup, add_video_event, event_id, new_id

PAGES = ("/", "/events", "/cameras", "/charts", "/charts?range=week", "/system")


def card_ids(html: str) -> list[str]:
    return re.findall(r'<li class="card [^"]*" id="event-([0-9a-f-]+)"', html)


def link(html: str, element_id: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)"[^>]*id="{element_id}"', html)
    return None if found is None else unescape(found.group(1))


async def test_every_page_renders_server_side_and_accessibly(
    client: httpx.AsyncClient, home: Home
) -> None:
    """Each page is complete HTML without JavaScript: one <main> and <h1>, labelled controls,
    alt text on every picture, and headers that keep it private."""
    for path in (*PAGES, f"/events/{event_id(home.high)}"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert Markup(response.text).problems() == [], path


async def test_the_live_page_lists_the_newest_events_with_their_pictures(
    client: httpx.AsyncClient, home: Home
) -> None:
    """Newest first, each with its level in words and colour, camera, time, summary and a
    picture: the boxes thumbnail, else the image as uploaded; live updates are announced as
    needing JavaScript."""
    html = (await client.get("/")).text
    assert card_ids(html) == [event_id(home.pending), event_id(home.high), event_id(home.low)]
    assert "<noscript>" in html
    assert 'data-feed="/api/live"' in html
    assert '<li class="card level-high"' in html
    assert "High · score 72" in html
    assert "Awaiting analysis" in html
    assert "A person and a cat at the front door" in html
    assert f'src="/ui/thumbnails/{home.person["id"]}"' in html
    assert 'alt="Picture from Front Door at ' in html  # the camera's name, not its id
    assert '<span class="card-camera">Front Door</span>' in html
    assert "with boxes around: cat, person" in html
    assert 'src="/ui/media/back_yard/Back%20Yard/c.jpg"' in html
    assert "nothing detected in it" in html
    assert "No picture" in html  # the pending event has no files


async def test_the_card_fragment_is_what_the_live_page_inserts(
    client: httpx.AsyncClient, engine: AsyncEngine, home: Home
) -> None:
    """The fragment is the same card as on the page; 404 for an unknown event or one whose
    batch is not projected yet (the script retries)."""
    response = await client.get(f"/ui/fragments/events/{event_id(home.high)}")
    assert response.status_code == 200
    assert response.text.strip().startswith('<li class="card level-high"')
    assert f'src="/ui/thumbnails/{home.person["id"]}"' in response.text
    analysis_only = event_row(40, "front_door", None)
    await insert(engine, "events", [analysis_only])
    for missing in (new_id(), "not-a-uuid", event_id(analysis_only)):
        assert (await client.get(f"/ui/fragments/events/{missing}")).status_code == 404


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("camera_id=back_yard", ["low"]),
        ("camera_id=front_door", ["pending", "high"]),
        ("risk_level=high&risk_level=low", ["high", "low"]),
        ("object_type=cat", ["high"]),
        ("camera_id=&object_type=&since=&until=", ["pending", "high", "low"]),  # an empty form
    ],
)
async def test_the_filter_form_narrows_the_events(
    client: httpx.AsyncClient, home: Home, query: str, expected: list[str]
) -> None:
    """Camera, level and object type filter like the API; empty fields are no filter."""
    html = (await client.get(f"/events?{query}")).text
    assert card_ids(html) == [event_id(getattr(home, name)) for name in expected]


async def test_times_in_the_form_are_in_the_homes_zone(
    engine: AsyncEngine, make_config: MakeConfig, home: Home
) -> None:
    """`since`/`until` from the date pickers are local times, shown back as typed."""
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    start = (home.now - timedelta(minutes=20)).astimezone(berlin).strftime("%Y-%m-%dT%H:%M")
    async with serve(make_config(), WebConfig(timezone=berlin)) as client:
        html = (await client.get(f"/events?since={start}")).text
    assert card_ids(html) == [event_id(home.pending), event_id(home.high)]
    assert f'name="since" value="{start}"' in html


async def test_the_event_page_draws_the_cameras_zones_faintly(
    engine: AsyncEngine, make_config: MakeConfig, home: Home
) -> None:
    """The zones of the event's camera are drawn over each picture (SVG, frame-relative), named
    in the hint; another camera's zones are not; the page stays accessible."""
    zones = parse_zones(
        {
            "cameras": {
                "front_door": {
                    "zones": [
                        {"name": "porch", "points": [[0.1, 0.5], [0.6, 0.5], [0.6, 1]]},
                        {
                            "name": "street",
                            "kind": "ignore",
                            "points": [[0, 0.9], [1, 0.9], [1, 1]],
                        },
                    ]
                },
                "back_yard": {"zones": [{"name": "shed", "points": [[0, 0], [1, 0], [0, 1]]}]},
            }
        }
    )
    async with serve(make_config(), WebConfig(zones=zones)) as client:
        html = (await client.get(f"/events/{event_id(home.high)}")).text
    assert '<svg class="zones"' in html
    assert '<polygon class="zone zone-tag" points="10,50 60,50 60,100">' in html
    assert 'class="zone zone-ignore" points="0,90 100,90 100,100"' in html
    assert "Zones of this camera, faint: porch (tagged), street (ignored)." in html
    assert "shed" not in html
    assert Markup(html).problems() == []


async def test_bad_filters_are_explained_on_their_field(
    client: httpx.AsyncClient, home: Home
) -> None:
    """A value the API would refuse is a 400 naming the field, and the events still show."""
    response = await client.get("/events?camera_id=Front+Door&since=yesterday")
    assert response.status_code == 400
    assert 'id="f-camera" name="camera_id" aria-invalid="true"' in response.text
    assert "Not a camera id" in response.text
    assert "Not a time" in response.text
    assert len(card_ids(response.text)) == 3


async def test_the_search_box_ranks_matches_and_keeps_the_filters(
    client: httpx.AsyncClient, home: Home
) -> None:
    """The search box finds events by their words, best match first (a person in the summary
    before a newer one only detected), shows the search back, and combines with the filters."""
    html = (await client.get("/events?q=person")).text
    assert card_ids(html) == [event_id(home.high), event_id(home.pending)]
    assert 'id="f-q" type="search" name="q" value="person"' in html
    assert "best match first" in html
    assert Markup(html).problems() == []
    both = (await client.get("/events?q=person&camera_id=front_door&risk_level=high")).text
    assert card_ids(both) == [event_id(home.high)]
    assert card_ids((await client.get("/events?q=person&risk_level=low")).text) == []
    assert card_ids((await client.get("/events?q=")).text) == card_ids(
        (await client.get("/events")).text
    )  # an empty box is no search


async def test_search_results_page_forward_with_their_cursor(
    engine: AsyncEngine, make_config: MakeConfig, home: Home
) -> None:
    """A search pages forward through the API's search cursor with the filters kept, back to
    the best matches; a bad search is explained on its field and the events still show."""
    async with serve(make_config(), WebConfig(page_size=1)) as client:
        url: str | None = "/events?q=person&camera_id=front_door"
        pages: list[list[str]] = []
        cursors: list[str] = []
        while url is not None:
            html = (await client.get(url)).text
            pages.append(card_ids(html))
            query = parse_qs(urlsplit(url).query)
            assert query["q"] == ["person"]
            assert query["camera_id"] == ["front_door"]
            cursors.extend(query.get("cursor", []))
            url = link(html, "page-older")
        assert pages == [[event_id(home.high)], [event_id(home.pending)]]
        assert link(html, "page-first") == "/events?q=person&camera_id=front_door"
        for other in (f"q=cat&cursor={cursors[0]}", "q=person&cursor=not-a-cursor"):
            stale = (await client.get(f"/events?{other}")).text
            assert "That page link is out of date; showing the best matches." in stale
        bad = await client.get("/events?q=" + "x" * 201)
        assert bad.status_code == 400
        assert 'aria-invalid="true"' in bad.text
        assert "A search is at most 200 characters" in bad.text
        assert card_ids(bad.text) == [event_id(home.pending)]  # the newest, unsearched


async def test_paging_follows_the_api_cursor_both_ways(
    engine: AsyncEngine, make_config: MakeConfig, home: Home
) -> None:
    """Older pages follow `next_cursor`; newer pages lead back to the same pages; the filters
    stay on every link."""
    await insert(
        engine,
        "events",
        [
            event_row(100 + i, "back_yard", home.now - timedelta(hours=1, minutes=i))
            for i in range(9)
        ],
    )
    async with serve(make_config(), WebConfig(page_size=4)) as client:
        url: str | None = "/events?camera_id=back_yard"
        pages: list[list[str]] = []
        while url is not None:
            html = (await client.get(url)).text
            pages.append(card_ids(html))
            assert url == "/events?camera_id=back_yard" or "camera_id=back_yard" in url
            url = link(html, "page-older")
        assert [len(p) for p in pages] == [4, 4, 2]
        everything = [i for page in pages for i in page]
        assert len(set(everything)) == 10
        assert "page-newer" not in (await client.get("/events?camera_id=back_yard")).text
        back: list[list[str]] = [pages[-1]]
        url = link(html, "page-newer")
        while url is not None:
            html = (await client.get(url)).text
            back.append(card_ids(html))
            url = link(html, "page-newer")
        assert back[::-1] == pages


async def test_an_outdated_page_link_falls_back_to_the_newest(
    client: httpx.AsyncClient, home: Home
) -> None:
    """A cursor that does not decode is explained, and the first page is shown."""
    response = await client.get("/events?cursor=not-a-cursor")
    assert "That page link is out of date" in response.text
    assert len(card_ids(response.text)) == 3


async def test_the_event_page_shows_every_picture_box_detection_and_the_analysis(
    client: httpx.AsyncClient, home: Home
) -> None:
    """Every file of the batch (the boxes thumbnail of each), the detections table, the
    analysis and links to the original files."""
    html = (await client.get(f"/events/{event_id(home.high)}")).text
    pictures = re.findall(r'<img src="(/ui/[^"]+)" alt="([^"]+)"', html)
    assert len(pictures) == 2
    assert pictures[0][0] == f"/ui/thumbnails/{home.person['id']}"
    assert "boxes around: person" in pictures[0][1]
    assert "boxes around: cat" in pictures[1][1]
    assert 'href="/ui/media/front_door/Front%20Door/a.jpg"' in html
    assert 'href="/ui/media/front_door/Front%20Door/b.jpg"' in html
    table = html[html.index('<table id="detections">') :]
    assert re.findall(r'<th scope="row">(\w+)</th>', table) == ["person", "cat"]
    assert "91 %" in table
    assert "60, 20, 300 × 450" in table
    assert '<dd id="event-score">72</dd>' in html
    assert "person at confidence 0.91; a cat" in html
    assert ">High</p>" in html


async def test_a_video_plays_on_the_event_page_with_its_sampled_frames(
    engine: AsyncEngine, camera_root: Path, client: httpx.AsyncClient, home: Home
) -> None:
    """A video file is a `<video>` of the original file, its poster the best detection's frame;
    under it, the sampled frames where objects were found, earliest first, each linking to the
    video at its time (no script needed) with its thumbnail, and its boxes ready to overlay."""
    clip = await add_video_event(engine, camera_root, home.now)
    response = await client.get(f"/events/{event_id(clip.event)}")
    html = response.text
    assert Markup(html).problems() == []
    media = "/ui/media/front_door/Front%20Door/clip.mp4"
    (video,) = Markup(html).all("video")
    assert video["src"] == media
    assert video["poster"] == f"/ui/thumbnails/{clip.person['id']}"
    assert "controls" in video
    assert "No picture" not in html
    timeline = html[html.index('<ol class="timeline"') :]
    seeks = re.findall(r'<a class="seek" href="([^"]+)" data-seconds="([^"]+)">', timeline)
    assert seeks == [(f"{media}#t=0.0", "0.0"), (f"{media}#t=1.0", "1.0")]
    assert re.findall(r'class="seek-time">([^<]+)<', timeline) == ["0:00.0", "0:01.0"]
    assert f'src="/ui/thumbnails/{clip.car["id"]}"' in timeline
    assert f'src="/ui/thumbnails/{clip.person["id"]}"' in timeline
    boxes = re.findall(r'<svg class="boxes" data-seconds="([^"]+)" viewBox="0 0 320 240"', html)
    assert boxes == ["0.0", "1.0"]
    assert '<rect class="box box-best" x="40.0" y="10.0" width="200.0" height="220.0">' in html
    assert '<script src="/ui/static/clips.js" defer></script>' in html
    assert "video.currentTime" in (await client.get("/ui/static/clips.js")).text
    thumbnail = await client.get(f"/ui/thumbnails/{clip.person['id']}")
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/jpeg"


async def test_an_unknown_event_is_a_readable_404(client: httpx.AsyncClient, home: Home) -> None:
    """No such event: an HTML page that says so, with a way back."""
    for raw in (new_id(), "nope"):
        response = await client.get(f"/events/{raw}")
        assert response.status_code == 404
        assert "There is no event" in response.text
        assert 'href="/events"' in response.text


async def test_the_camera_grid_shows_latest_pictures_and_todays_counts(
    client: httpx.AsyncClient, home: Home
) -> None:
    """Each camera with its latest picture, last activity, and files and events today."""
    html = (await client.get("/cameras")).text
    assert html.index('id="camera-back_yard"') < html.index('id="camera-front_door"')
    front = html[html.index('id="camera-front_door"') :]
    since = day_start(home.now, home.now.tzinfo)  # type: ignore[arg-type]
    files_today = sum(
        1
        for f in home.files.values()
        if f["camera_id"] == "front_door" and f["captured_at"] >= since
    )
    events_today = sum(1 for e in (home.high, home.pending) if e["window_start"] >= since)
    assert f'<dd class="files-today">{files_today}</dd>' in front
    assert f'<dd class="events-today">{events_today}</dd>' in front
    assert 'src="/ui/media/front_door/Front%20Door/b.jpg"' in front
    assert 'alt="Latest picture from Front Door' in front
    assert "just now" in front or "min ago" in front
    assert 'href="/events?camera_id=front_door"' in front


async def test_the_charts_count_events_per_hour_by_level(
    client: httpx.AsyncClient, home: Home
) -> None:
    """The stacked bars hold every event of the range, by level; lag and latency are shown."""
    for query in ("", "?range=week"):
        html = (await client.get(f"/charts{query}")).text
        counts = re.findall(r'data-series="(\w+)" data-count="(\d+)"', html)
        per_level: dict[str, int] = {}
        for level, count in counts:
            per_level[level] = per_level.get(level, 0) + int(count)
        assert per_level == {"high": 1, "low": 1, "unscored": 1}
        assert '<strong id="total-high">1</strong>' in html
    assert '<table id="stream-lag-table">' in html
    assert "detect (files)" in html
    assert '<table id="latency">' in html  # the latency route answers
    assert "end to end" in html


async def test_latency_is_not_available_without_its_route(
    engine: AsyncEngine, make_config: MakeConfig, home: Home
) -> None:
    """Without /api/pipeline/latency the Charts page says "not available" and still renders."""
    from tests.api.conftest import with_lifespan_state

    app = web_app(make_config())
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != LATENCY_PATH]
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(with_lifespan_state(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="http://hsi.test") as client:
            response = await client.get("/charts")
    assert response.status_code == 200
    assert 'id="latency-unavailable"' in response.text
    assert f"does not answer {LATENCY_PATH}" in response.text


async def test_the_system_page_reports_readiness_streams_and_dead_letters(
    engine: AsyncEngine, make_config: MakeConfig, home: Home, tmp_path: Path
) -> None:
    """Redis and PostgreSQL from /ready, the AI backends probed (a dead LLM is not ready, its
    URL's password masked), each stream's groups, and the latest dead letters."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        analyzer_backend="llm",
        llm_url="http://user:secret@127.0.0.1:9",
        llm_model="tiny",
    )
    web = WebConfig(backends=ai_backends(settings), probe_timeout_seconds=1.0)
    async with serve(make_config(), web) as client:
        html = (await client.get("/system")).text
    rows = dict(re.findall(r'<tr><th scope="row">([\w ]+)</th><td>(.*?)</td>', html))
    assert "Ready" in rows["Redis"]
    assert "Ready" in rows["PostgreSQL"]
    assert "Ready" in rows["Detector"]
    assert "Not ready" in rows["Analyzer"]
    assert "secret" not in html
    assert "LLM tiny at http://user:***@127.0.0.1:9" in html
    assert "<td>front_door</td><td>files</td><td>1</td><td>detect</td><td>1</td>" in html
    assert "UndecodableMediaError: truncated" in html


async def test_original_files_and_thumbnails_are_served_with_the_apis_rules(
    client: httpx.AsyncClient, home: Home
) -> None:
    """Pictures come through the dashboard's routes with the API's confinement and caching."""
    thumbnail = await client.get(f"/ui/thumbnails/{home.person['id']}")
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/jpeg"
    original = await client.get("/ui/media/front_door/Front%20Door/a.jpg")
    assert original.status_code == 200
    assert "etag" in original.headers
    for refused in ("/ui/media/front_door/Back%20Yard/c.jpg", "/ui/media/front_door/..%2Fx.jpg"):
        assert (await client.get(refused)).status_code == 404
    assert (await client.get("/ui/static/app.css")).status_code == 200
    assert "EventSource" in (await client.get("/ui/static/live.js")).text

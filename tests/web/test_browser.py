"""The dashboard in a real browser (headless Chromium through the system chromedriver): live
updates from the real write side, filters and paging, the event page's boxes, the key form.

Screenshots of every page go to the test's `tmp_path/screenshots` (the CI artifact).
"""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hsi.api.config import LiveConfig
from hsi.app.pipeline import ALL_STAGES, Pipeline, PipelineOptions
from hsi.app.runner import build_watcher
from hsi.settings.components import ai_backends
from hsi.settings.model import Settings
from hsi.web import WebConfig
from streams.envelope import entry_fields
from streams.names import StreamNames
from streams.schemas import BatchClosed
from tests.api.rows import add_camera, event_row, insert
from tests.conftest import PHOTOS
from tests.web.browser import call, chromium, screenshot, serving, until
from tests.web.conftest import MakeConfig, web_app
from tests.web.home import add_video_event

pytestmark = pytest.mark.slow

FAST_LIVE = LiveConfig(heartbeat_seconds=1.0, block_seconds=0.2)
KEY = "dashboard-key"


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium with a fresh profile (skipped without Chromium, failed so in CI)."""
    with chromium(tmp_path / "chromium-profile") as browser:
        yield browser


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return tmp_path / "screenshots"


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _texts(driver: Any, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(_by("CSS_SELECTOR"), css)]


def _image_loaded(driver: Any, css: str) -> bool:
    """Every image matched by `css` is decoded (complete, with a natural width)."""
    images = driver.find_elements(_by("CSS_SELECTOR"), css)
    return bool(images) and all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
        for i in images
    )


def _card(driver: Any, css: str) -> dict[str, str] | None:
    """The text and picture alt of a card once it shows its analysis and its picture loaded
    (read in one script: the live page may swap the card while the test reads it)."""
    found = driver.execute_script(
        """
        const card = document.querySelector(arguments[0]);
        const img = card && card.querySelector("img");
        if (!card || !img || !img.complete || !img.naturalWidth) return null;
        if (!card.textContent.includes("score")) return null;
        return {text: card.innerText, alt: img.alt};
        """,
        css,
    )
    return found if isinstance(found, dict) else None


def _settings(root: Path, data: Path, prefix: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        foscam_base_path=root,
        data_dir=data,
        stream_prefix=prefix,
        batch_window_seconds=5,
        batch_idle_timeout_seconds=1,
        watch_stable_seconds=0.2,
        stream_block_ms=100,
        detection_confidence_threshold=0.35,
        timezone="UTC",
    )


async def _first_event_seen(engine: AsyncEngine) -> str:
    """The id of the first projected event (with its window), once there is one."""
    async with asyncio.timeout(60):
        while True:
            async with engine.connect() as conn:
                found = await conn.scalar(
                    text("SELECT id FROM events WHERE window_start IS NOT NULL LIMIT 1")
                )
            if found is not None:
                return str(found)
            await asyncio.sleep(0.02)


def _red_pixels(jpeg: bytes) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((red > 200) & (green < 60) & (blue < 60)).sum())


async def test_a_dropped_image_appears_live_and_on_its_event_page(
    engine: AsyncEngine,
    make_config: MakeConfig,
    redis_url: str,
    database_url: str,
    db_schema: str,
    key_prefix: str,
    camera_root: Path,
    tmp_path: Path,
    redis_client: Redis,
    driver: Any,
    shots: Path,
) -> None:
    """A picture dropped into a camera folder becomes a card on the open live page, without a
    reload; its event page shows the boxes."""
    settings = _settings(camera_root, tmp_path / "data", key_prefix)
    config = make_config(live=FAST_LIVE)
    app = web_app(config, WebConfig(backends=ai_backends(settings)))
    pipeline = Pipeline(
        settings,
        redis_url,
        PipelineOptions(stages=ALL_STAGES, discovery_interval_seconds=0.2, batch_tick_seconds=0.2),
        database_url=f"{database_url}?options=-csearch_path%3D{db_schema}",
    )
    await pipeline.start()
    watcher = build_watcher(settings, pipeline.redis)
    await watcher.start()
    try:
        async with serving(app) as base:
            await call(driver.get, base + "/")
            await until(
                lambda: "Live:" in driver.find_element(_by("ID"), "live-status").text,
                what="the live feed to connect",
            )
            assert not _texts(driver, "#live-events li")
            # A mark on this page's window: a reload would start a new window without it.
            await call(driver.execute_script, "window.hsiTestPage = 'the first load'")
            folder = camera_root / "Front Door"
            folder.mkdir()
            shutil.copy(PHOTOS / "person-astronaut.jpg", folder / "snapshot-1.jpg")

            event_id = await _first_event_seen(engine)
            card_css = f"#live-events li#event-{event_id}"
            card = await until(
                lambda: _card(driver, card_css),
                within=60,
                what="the new event's card with its analysis and thumbnail",
            )
            page = await call(driver.execute_script, "return window.hsiTestPage")
            assert page == "the first load", "the page was reloaded to show the card"
            assert "Front Door" in card["text"]  # the camera's folder name
            assert "person" in card["text"].lower()
            assert "Front Door" in card["alt"]
            assert "person" in card["alt"]
            assert driver.current_url == base + "/"  # still the live page
            await call(screenshot, driver, shots / "live.png")

            await call(driver.find_element(_by("CSS_SELECTOR"), f"{card_css} h3 a").click)
            await until(lambda: driver.current_url.endswith(f"/events/{event_id}"), what="event")
            await until(lambda: _image_loaded(driver, ".pictures img"), what="event pictures")
            thumbnail = driver.find_element(_by("CSS_SELECTOR"), ".pictures img")
            source = thumbnail.get_attribute("src")
            assert "/ui/thumbnails/" in source
            assert "boxes around: person" in thumbnail.get_attribute("alt")
            labels = _texts(driver, "#detections tbody th")
            assert "person" in labels
            assert driver.find_element(_by("ID"), "event-score").text.isdigit()
            assert driver.find_element(_by("ID"), "analysis-heading").text == "Analysis"
            original = driver.find_element(_by("PARTIAL_LINK_TEXT"), "Original file")
            assert "/ui/media/front_door/Front%20Door/snapshot-1.jpg" in original.get_attribute(
                "href"
            )
            await call(screenshot, driver, shots / "event.png")
            async with httpx.AsyncClient() as http:
                jpeg = (await http.get(source)).content
            assert _red_pixels(jpeg) > 100  # the highlighted box is drawn

            await call(driver.get, base + "/cameras")
            await until(lambda: _image_loaded(driver, "#camera-front_door img"), what="camera")
            assert (
                driver.find_element(_by("CSS_SELECTOR"), "#camera-front_door .files-today").text
                == "1"
            )
            assert (
                driver.find_element(_by("CSS_SELECTOR"), "#camera-front_door .events-today").text
                == "1"
            )
            await call(screenshot, driver, shots / "cameras.png")

            await call(driver.get, base + "/charts")
            bars = driver.find_elements(_by("CSS_SELECTOR"), "#events-per-hour rect[data-count]")
            assert sum(int(b.get_attribute("data-count")) for b in bars) == 1
            async with httpx.AsyncClient() as http:
                answer = await http.get(base + "/api/pipeline/latency?window=1d")
            if answer.status_code == 200:  # the route of the latency endpoint exists
                stages = _texts(driver, "#latency tbody th")
                assert stages[-1] == "end to end"
                assert driver.find_elements(_by("CSS_SELECTOR"), "#stage-latency rect")
            else:
                assert driver.find_elements(_by("ID"), "latency-unavailable")
            await call(screenshot, driver, shots / "charts.png")

            await call(driver.get, base + "/system")
            rows = {
                r.find_element(_by("TAG_NAME"), "th").text: r.text
                for r in driver.find_elements(_by("CSS_SELECTOR"), "#readiness tbody tr")
            }
            assert "Ready" in rows["Redis"]
            assert "Ready" in rows["PostgreSQL"]
            assert "NanoDet" in rows["Detector"]
            assert "rule-based" in rows["Analyzer"]
            assert "front_door" in driver.find_element(_by("ID"), "streams").text
            await call(screenshot, driver, shots / "system.png")
    finally:
        await watcher.stop()
        await pipeline.stop()


async def test_filters_and_paging_in_the_browser(
    engine: AsyncEngine, make_config: MakeConfig, driver: Any, shots: Path
) -> None:
    """The filter form narrows the events; older and newer pages follow the API's cursor."""
    await add_camera(engine, "back_yard", "Back Yard")
    await add_camera(engine, "front_door", "Front Door")
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        event_row(
            i,
            "back_yard" if i % 3 else "front_door",
            now - timedelta(minutes=i),
            risk_level="high" if i % 2 else "low",
            risk_score=70 if i % 2 else 10,
            summary=f"event number {i}",
        )
        for i in range(30)
    ]
    await insert(engine, "events", rows)
    expected = [
        str(r["id"]) for r in rows if r["camera_id"] == "back_yard" and r["risk_level"] == "high"
    ]
    app = web_app(make_config(), WebConfig(page_size=4))
    async with serving(app) as base:
        await call(driver.get, base + "/events")
        from selenium.webdriver.support.select import Select

        select = Select(driver.find_element(_by("ID"), "f-camera"))
        await call(select.select_by_value, "back_yard")
        high = driver.find_element(_by("CSS_SELECTOR"), "input[name=risk_level][value=high]")
        await call(high.click)
        submit = driver.find_element(_by("CSS_SELECTOR"), ".filters button[type=submit]")
        await call(submit.click)
        await until(lambda: "camera_id=back_yard" in driver.current_url, what="filtered page")

        def page_ids() -> list[str]:
            return [
                str(e.get_attribute("data-event-id"))
                for e in driver.find_elements(_by("CSS_SELECTOR"), "#event-list li.card")
            ]

        first = page_ids()
        assert first == expected[:4]
        assert all("High" in t for t in _texts(driver, "#event-list .badge"))
        await call(screenshot, driver, shots / "events.png")
        await call(driver.find_element(_by("ID"), "page-older").click)
        await until(lambda: page_ids() == expected[4:8], what="the second page")
        await call(driver.find_element(_by("ID"), "page-older").click)
        await until(lambda: page_ids() == expected[8:10], what="the last page")
        assert not driver.find_elements(_by("ID"), "page-older")
        await call(driver.find_element(_by("ID"), "page-newer").click)
        await until(lambda: page_ids() == expected[4:8], what="back to the second page")
        await call(driver.find_element(_by("ID"), "page-newer").click)
        await until(lambda: page_ids() == expected[:4], what="back to the first page")
        assert not driver.find_elements(_by("ID"), "page-newer")
        selected = Select(driver.find_element(_by("ID"), "f-camera")).first_selected_option
        assert selected.get_attribute("value") == "back_yard"


async def test_the_key_form_then_live_updates_with_keys_on(
    engine: AsyncEngine,
    make_config: MakeConfig,
    redis_client: Redis,
    key_prefix: str,
    driver: Any,
    shots: Path,
) -> None:
    """With keys on, a page asks for the key once, returns to the page, and the live feed
    (which takes the key from the browser's storage) delivers new events."""
    config = make_config(api_key_enabled=True, api_keys=(SecretStr(KEY),), live=FAST_LIVE)
    names = StreamNames(key_prefix)
    async with serving(web_app(config)) as base:
        await call(driver.get, base + "/events?risk_level=high")
        await until(lambda: "/ui/key" in driver.current_url, what="the key form")
        field = driver.find_element(_by("ID"), "api-key")
        await call(field.send_keys, "wrong")
        await call(field.submit)
        await until(lambda: driver.find_elements(_by("ID"), "key-error"), what="the refusal")
        await call(screenshot, driver, shots / "key.png")
        field = driver.find_element(_by("ID"), "api-key")
        await call(field.send_keys, KEY)
        await call(field.submit)
        await until(lambda: "/events?risk_level=high" in driver.current_url, what="the page")
        stored = driver.execute_script("return window.localStorage.getItem('hsi.apiKey')")
        assert stored == KEY

        await call(driver.get, base + "/")
        await until(
            lambda: "Live:" in driver.find_element(_by("ID"), "live-status").text,
            what="the live feed to connect with the stored key",
        )
        await add_camera(engine, "garage", "Garage")
        at = datetime.now(UTC)
        row = event_row(7, "garage", at, risk_level="critical", risk_score=95, summary="A fox")
        await insert(engine, "events", [row])
        await redis_client.sadd(names.camera_set, "garage")
        batch = BatchClosed(
            camera_id="garage",
            batch_id=str(row["id"]),
            detections=(),
            window_start=at,
            window_end=at,
            close_reason="idle",
            detection_count=1,
            object_types=("fox",),
            max_confidence=0.9,
            fast_path=False,
            closed_at=at,
        )
        await redis_client.xadd(names.batches("garage"), entry_fields(batch))  # type: ignore[arg-type]
        card_css = f"#live-events li#event-{row['id']}"
        await until(lambda: driver.find_elements(_by("CSS_SELECTOR"), card_css), what="card")
        assert "Critical" in driver.find_element(_by("CSS_SELECTOR"), card_css).text

        await call(driver.find_element(_by("CSS_SELECTOR"), "#forget-key button").click)
        await until(lambda: "/ui/key" in driver.current_url, what="the key form again")
        assert driver.execute_script("return window.localStorage.getItem('hsi.apiKey')") is None
        await call(driver.get, base + "/system")
        assert "/ui/key" in driver.current_url


class _Answers:
    """The app, noting the path and status of every HTTP answer it gives (the server's side of
    what the browser asked for)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append((scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, noting)

    def partial(self, path: str) -> int:
        return sum(1 for seen, status in list(self.seen) if seen == path and status == 206)


async def test_a_video_plays_and_seeks_to_its_sampled_frames(
    engine: AsyncEngine, camera_root: Path, make_config: MakeConfig, driver: Any, shots: Path
) -> None:
    """The event page's video loads by byte ranges; a timeline entry pauses it at that frame
    and shows the frame's boxes; playing hides them again."""
    await add_camera(engine, "front_door", "Front Door")
    clip = await add_video_event(engine, camera_root, datetime.now(UTC).replace(microsecond=0))
    answers = _Answers(web_app(make_config()))
    media = "/ui/media/front_door/Front Door/clip.mp4"
    async with serving(answers) as base:
        await call(driver.get, f"{base}/events/{clip.event['id']}")
        video = driver.find_element(_by("CSS_SELECTOR"), "video")
        state = "return arguments[0].readyState"
        await until(lambda: driver.execute_script(state, video) >= 1, what="the video's metadata")
        assert answers.partial(media) >= 1
        duration = driver.execute_script("return arguments[0].duration", video)
        assert duration == pytest.approx(3.0, abs=0.3)

        link = driver.find_element(_by("CSS_SELECTOR"), 'a.seek[data-seconds="1.0"]')
        await call(link.click)

        def at_the_frame() -> bool:
            return bool(
                driver.execute_script(
                    "var v = arguments[0]; return !v.seeking && v.paused && v.readyState >= 2"
                    " && Math.abs(v.currentTime - 1.0) < 0.01",
                    video,
                )
            )

        await until(at_the_frame, what="the video paused at 1 s")
        boxes = driver.find_element(_by("CSS_SELECTOR"), 'svg.boxes[data-seconds="1.0"]')
        assert boxes.is_displayed()
        other = driver.find_element(_by("CSS_SELECTOR"), 'svg.boxes[data-seconds="0.0"]')
        assert not other.is_displayed()
        assert link.get_attribute("aria-current") == "true"
        assert _image_loaded(driver, "ol.timeline img")
        await call(screenshot, driver, shots / "video-event.png")

        driver.execute_script("arguments[0].muted = true; arguments[0].play()", video)
        await until(lambda: not boxes.is_displayed(), what="the boxes hidden while playing")
        await until(
            lambda: driver.execute_script("return arguments[0].currentTime", video) > 1.2,
            what="the video playing on",
        )
        assert link.get_attribute("aria-current") is None
        assert answers.partial(media) >= 1

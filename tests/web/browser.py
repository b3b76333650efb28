"""A real browser for the dashboard tests: Debian's headless Chromium driven by Selenium through
the system chromedriver (never a downloaded one), and the app under uvicorn in a thread.

Selenium blocks, and the write side of the end-to-end test runs on the test's event loop, so
every browser call goes through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from tests.tools import require_tool

T = TypeVar("T")

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
WINDOW = (1280, 900)


def find_chromium() -> tuple[str, str]:
    """The Chromium and chromedriver executables; a missing one skips the test (fails it in CI)."""
    hint = "install Debian's `chromium` and `chromium-driver` packages to run the browser tests"
    return require_tool(*CHROMIUM_NAMES, hint=hint), require_tool(CHROMEDRIVER, hint=hint)


@contextmanager
def chromium(user_data_dir: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, closed afterwards."""
    browser, driver_path = find_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data_dir}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def call(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking Selenium call off the event loop."""
    return await asyncio.to_thread(function, *args)


async def until(check: Callable[[], T], within: float = 15.0, what: str = "condition") -> T:
    """Poll a (blocking) check until it returns something truthy, within `within` seconds."""
    last: BaseException | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    found = await call(check)
                except Exception as exc:  # an element not there yet, a stale reference
                    last = exc
                else:
                    if found:
                        return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}: {last!r}") from None


def screenshot(driver: Any, path: Path) -> Path:
    """A PNG of the whole page, beyond the window (Chromium's DevTools capture)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000)}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """`app` under uvicorn (lifespan on) in a thread on a free loopback port; its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True, name=f"web-test-{port}")
    thread.start()
    try:
        async with asyncio.timeout(10):
            while not server.started:  # a plain flag set by uvicorn's thread
                assert thread.is_alive(), "uvicorn stopped while starting"
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()

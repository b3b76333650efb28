"""`hsi demo`: the whole system, as `hsi up` runs it, on a scripted scene from four cameras.

`run_demo()` starts (or reuses) the servers of the demo's sandbox (`hsi.demo.sandbox`), clears the
previous run, starts what `hsi up` runs (`hsi.app.runner._up`: watcher, stages, reclaimers,
projector, API), plays `hsi.demo.scene.SCENE` into the demo's camera folders and follows the
result through the API as any client would, until every upload is detected, every object belongs
to an event and every event is analyzed. Then it prints the summary and, unless `wait` is off,
leaves the API serving until Ctrl-C (SIGINT) or SIGTERM.

Stopping: while uvicorn serves, it owns SIGINT/SIGTERM; it shuts the API down gracefully, restores
the handlers it found and raises the signal once more. The demo's own handlers (`SignalTrap`) are
the ones it finds, so that second delivery is only recorded and `_up` finishes its cleanup (the
pipeline finishes the batches in hand). To end the demo itself (`--no-wait`), the demo raises
SIGINT while uvicorn serves, exactly as Ctrl-C would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console

from hsi.demo.sandbox import Sandbox, choose_port, reset, sandbox
from hsi.demo.scene import CAMERAS, photo_bytes, scene_seconds, upload, upload_name
from hsi.demo.view import DemoView, Screen, Snapshot
from hsi.logs.setup import log_event
from hsi.settings import components

if TYPE_CHECKING:
    from hsi.app.services import ServiceURLs
    from hsi.infra.embedded import EmbeddedServers
    from hsi.settings.model import Settings

T = TypeVar("T")
log = logging.getLogger("hsi.demo")


@dataclass(frozen=True)
class DemoOptions:
    speed: float = 1.0  # play the scene (and the batch timeouts) this many times faster
    wait: bool = True  # keep the API serving after the scene, until SIGINT/SIGTERM
    port: int | None = None  # None: API_PORT if set and free, else 8000 or any free port
    settle_timeout_seconds: float = 90.0  # after the scene, for the last events to be analyzed
    ready_timeout_seconds: float = 120.0
    poll_seconds: float = 0.5


@dataclass(frozen=True)
class DemoReport:
    url: str
    events: tuple[dict[str, Any], ...]
    complete: bool  # every upload became what it should, in time
    interrupted: bool  # stopped by a signal before the scene was over
    seconds: float  # from the start until the events were complete (or the demo gave up)

    @property
    def cameras(self) -> set[str]:
        return {str(e["camera_id"]) for e in self.events}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if self.complete else 1


def make_console() -> Console:
    """stdout; 120 columns when it is not a terminal (pipes, CI) and COLUMNS is unset."""
    if Console().is_terminal or "COLUMNS" in os.environ:
        return Console(highlight=False)
    return Console(highlight=False, width=120)


class SignalTrap:
    """SIGINT/SIGTERM handlers for the times uvicorn's are not installed (see the module doc)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.stop = asyncio.Event()
        self.received: list[int] = []
        self._own = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._own and signum == signal.SIGINT:
            self._own -= 1  # the SIGINT the demo raised, delivered again by uvicorn
            return
        self.received.append(signum)
        self._loop.call_soon_threadsafe(self.stop.set)

    def request_shutdown(self) -> None:
        """Ask the serving uvicorn to shut down gracefully, as Ctrl-C does."""
        self._own += 1
        signal.raise_signal(signal.SIGINT)


def run_demo(
    settings: Settings, options: DemoOptions | None = None, *, console: Console | None = None
) -> DemoReport:
    """Play the demo scene through the whole system; see the module docstring."""
    from hsi.app import runner
    from hsi.app.services import embedded_servers
    from hsi.logs.setup import reset_logging, setup_logging

    options = options or DemoOptions()
    console = console or make_console()
    started = time.monotonic()
    box = sandbox(settings, options.speed)
    demo = box.settings
    port, port_note = choose_port(
        options.port, demo.api_port, api_port_set="api_port" in demo.model_fields_set
    )
    servers = embedded_servers(demo)
    running_before = {s.name for s in servers.status() if s.running}
    configured = {"redis": demo.redis_url, "postgres": demo.database_url}
    embedded = [name for name, url in configured.items() if not url]
    console.print(
        f"[bold]HSI demo[/]: {len(CAMERAS)} cameras ({', '.join(CAMERAS)}) upload photographs; "
        "HSI detects, batches, scores and serves them."
    )
    console.print(
        f"  data {demo.data_dir}  ·  cameras {demo.camera_root}  ·  keys {demo.stream_prefix}:*"
        f"  ·  log {box.log_path}",
        markup=False,
    )
    if port_note:
        console.print(port_note, markup=False)
    if embedded:
        console.print(
            "starting the demo's embedded "
            + " and ".join("PostgreSQL" if n == "postgres" else "Redis" for n in embedded)
            + " (the first run creates the database: a few seconds)…"
        )
    log_stream = None
    try:
        urls = runner._boot(demo)  # the servers, logging and telemetry, as for `hsi up`
        box.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_stream = box.log_path.open("a", encoding="utf-8")
        # the terminal is the demo's: HSI's log lines go to the demo's log file
        setup_logging(components.logging_config(demo, db_url=urls.database_url), stream=log_stream)
        return asyncio.run(_play(box, urls, options, port, console, started))
    finally:
        stopped = _stop_started(servers, embedded, running_before)
        if log_stream is not None:
            reset_logging()
            log_stream.close()
        if stopped:
            console.print(f"stopped the demo's embedded {' and '.join(stopped)}")


def _stop_started(servers: EmbeddedServers, embedded: list[str], before: set[str]) -> list[str]:
    """Stop the embedded servers this run started (those that ran before keep running)."""
    from hsi.infra.embedded import services_lock

    stopped = []
    for server in (servers.redis, servers.postgres):
        if server.name in embedded and server.name not in before and server.status().running:
            with services_lock(servers.data_dir):
                if server.stop():
                    stopped.append("PostgreSQL" if server.name == "postgres" else "Redis")
    return stopped


async def _play(
    box: Sandbox,
    urls: ServiceURLs,
    options: DemoOptions,
    port: int,
    console: Console,
    started: float,
) -> DemoReport:
    from hsi.app import runner

    trap = SignalTrap(asyncio.get_running_loop())
    trap.install()
    url = f"http://127.0.0.1:{port}"
    view = DemoView(speed=options.speed)

    def report(*, complete: bool, interrupted: bool) -> DemoReport:
        return DemoReport(
            url, tuple(view.ordered_events()), complete, interrupted, time.monotonic() - started
        )

    try:
        console.print("clearing the previous demo run…")
        await reset(box, urls)
        if trap.stop.is_set():
            return report(complete=False, interrupted=True)
        console.print("starting HSI as `hsi up` runs it: watcher, stages, projector, API…")
        up = asyncio.create_task(
            runner._up(box.settings, urls, runner.UpOptions(port=port)), name="hsi-up"
        )
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            ready = await _until(up, trap, _wait_ready(client, options.ready_timeout_seconds))
            if ready is None:
                await _shutdown(up, client, trap)
                console.print("interrupted before HSI was ready; stopped cleanly")
                return report(complete=False, interrupted=True)
            console.print(f"HSI is ready at {url}; the scene starts.", markup=False)
            with Screen(console, view) as screen:
                complete = await _until(up, trap, _scene(client, box, view, screen, options))
            if complete is None:
                await _shutdown(up, client, trap)
                console.print("interrupted: HSI stopped cleanly")
                return report(complete=False, interrupted=True)
            result = report(complete=complete, interrupted=False)
            if not console.is_terminal:
                console.print(view.events_table())
            _summary(console, result, view, box)
            if options.wait:
                _try_lines(console, url, result, box, await _serves_dashboard(client))
                await _until(up, trap, _tail_events(client, view, console))
            else:
                console.print("stopping (--no-wait)…")
            await _shutdown(up, client, trap)
            console.print("HSI demo stopped cleanly.")
            return result
    finally:
        trap.restore()


async def _until(up: asyncio.Task[None], trap: SignalTrap, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None when HSI ends or a signal comes first (`work` cancelled)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(trap.stop.wait())
    finished = False
    try:
        await asyncio.wait({task, up, stop}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if finished else None


async def _answers(client: httpx.AsyncClient, path: str) -> bool:
    try:
        return (await client.get(path)).status_code == 200
    except httpx.TransportError:
        return False


async def _wait_ready(client: httpx.AsyncClient, within: float) -> bool:
    async with asyncio.timeout(within):
        while True:
            if await _answers(client, "/ready"):
                return True
            await asyncio.sleep(0.2)


async def _shutdown(up: asyncio.Task[None], client: httpx.AsyncClient, trap: SignalTrap) -> None:
    """Stop HSI gracefully (uvicorn must be serving to hear the signal), then surface its error."""
    if not up.done():
        try:
            async with asyncio.timeout(60):
                while not up.done():
                    if await _answers(client, "/health"):
                        break
                    await asyncio.sleep(0.1)
        except TimeoutError:
            up.cancel()
        if not up.done():
            trap.request_shutdown()
    with contextlib.suppress(asyncio.CancelledError):
        await up


async def _snapshot(client: httpx.AsyncClient) -> Snapshot:
    """Streams first: lag 0 there means the rows read next include everything counted."""

    async def get(path: str, **params: Any) -> Any:
        response = await client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    streams = await get("/api/streams")
    detections = (await get("/api/detections", limit=100))["items"]
    events = (await get("/api/events", limit=100))["items"]
    return Snapshot(streams, detections, events)


async def _scene(
    client: httpx.AsyncClient, box: Sandbox, view: DemoView, screen: Screen, options: DemoOptions
) -> bool:
    """Play the scene and follow it; True once settled, False when the time is up."""
    player = asyncio.create_task(_upload_scene(box, view, screen, options.speed))
    screen.status("the cameras upload…")
    try:
        async with asyncio.timeout(scene_seconds(options.speed) + options.settle_timeout_seconds):
            while True:
                try:
                    snapshot = await _snapshot(client)
                except (httpx.HTTPError, ValueError) as exc:
                    log_event(log, "demo.poll_failed", level=logging.WARNING, error=repr(exc))
                else:
                    screen.show(view.apply(snapshot))
                    if player.done():
                        player.result()  # an upload that failed ends the demo here
                        if view.settled(snapshot):
                            screen.status("every upload is processed and every event analyzed")
                            return True
                        if not view.message.startswith("waiting"):
                            screen.status("waiting for the last batches to close and be scored…")
                await asyncio.sleep(options.poll_seconds)
    except TimeoutError:
        screen.status("gave up waiting: some uploads were not processed in time")
        return False
    finally:
        if not player.done():
            player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player


async def _upload_scene(box: Sandbox, view: DemoView, screen: Screen, speed: float) -> None:
    from hsi.settings.components import watch_config

    zone = ZoneInfo(watch_config(box.settings).timezone)  # the zone the watcher reads names in
    loop = asyncio.get_running_loop()
    start = loop.time()
    taken: dict[str, set[str]] = {}
    for row in view.rows:
        delay = start + row.shot.at / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        names = taken.setdefault(row.shot.camera, set())
        row.file = upload_name(datetime.now(zone).replace(tzinfo=None), names)
        names.add(row.file)
        row.status = "uploading"
        screen.show(
            [
                f"upload  {row.shot.camera:<11} {row.file:<28} {row.shot.caption}"
                f"{' (as .part, then renamed)' if row.shot.via_temporary_name else ''}"
            ]
        )
        await upload(
            photo_bytes(row.shot.photo),
            box.settings.camera_root / row.shot.camera / row.file,
            pause=0.1 / speed,
            via_temporary_name=row.shot.via_temporary_name,
        )
        row.status = "uploaded"
        screen.show([])


async def _tail_events(client: httpx.AsyncClient, view: DemoView, console: Console) -> None:
    """While the API stays up: print the events that come later (photos dropped by hand)."""
    while True:
        await asyncio.sleep(2.0)
        try:
            response = await client.get("/api/events", params={"limit": 100})
            response.raise_for_status()
            events = response.json()["items"]
        except (httpx.HTTPError, ValueError):
            continue
        for line in view.apply(Snapshot({}, [], events)):
            console.print(line, markup=False, highlight=False)


async def _serves_dashboard(client: httpx.AsyncClient) -> bool:
    try:
        response = await client.get("/")
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "html" in response.headers.get("content-type", "")


def _summary(console: Console, result: DemoReport, view: DemoView, box: Sandbox) -> None:
    cameras = ", ".join(sorted(result.cameras)) or "none"
    if result.complete:
        console.print(
            f"[bold green]Done in {result.seconds:.1f} s[/]: {len(view.rows)} uploads from "
            f"{len(CAMERAS)} cameras became {len(result.events)} events (cameras: {cameras})."
        )
    else:
        console.print(
            f"[bold red]Not everything was processed in time[/] ({result.seconds:.1f} s, "
            f"{len(result.events)} events, cameras: {cameras}). See {box.log_path} and run "
            "`hsi doctor`."
        )


def _try_lines(
    console: Console, url: str, result: DemoReport, box: Sandbox, dashboard: bool
) -> None:
    some_id = result.events[0]["id"] if result.events else "<event id>"
    lines = [
        f"The API keeps running at {url}. Try:",
        *([f"  open {url}/                      the dashboard"] if dashboard else []),
        f"  curl -s {url}/api/events | python3 -m json.tool",
        f"  curl -s '{url}/api/events?camera_id=front_door&min_score=20'",
        f"  curl -s {url}/api/events/{some_id}",
        f"  curl -s {url}/api/cameras",
        f"  curl -s {url}/api/streams | python3 -m json.tool     # stream lengths, group lag",
        f"  curl -N {url}/api/live                                # the live feed",
        f"Drop more photos into {box.settings.camera_root}/<camera name>/ and watch them arrive.",
        "Press Ctrl-C to stop.",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False)

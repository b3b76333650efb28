"""The app under a real uvicorn in a thread, and a Server-Sent Events reader for its client."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from hsi.api.config import APIConfig
from hsi.app.asgi import create_app

Event = dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running(
    config: APIConfig,
    *,
    app: Starlette | None = None,
    tls: Mapping[str, Any] | None = None,
    verify: ssl.SSLContext | bool = True,
    log_level: str | None = "warning",
) -> AsyncIterator[httpx.AsyncClient]:
    """The app of `config` (or `app`) under uvicorn in a thread, and a client for it; `tls` are
    uvicorn's SSL options (`hsi.infra.tls.uvicorn_ssl_options`), `verify` the client's side of them;
    `log_level` None leaves uvicorn's loggers to the root logger's level, as `hsi up` does."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app or create_app(config),
            host="127.0.0.1",
            port=port,
            log_config=None,
            log_level=log_level,
            ws="none",
            timeout_graceful_shutdown=2,
            **(tls or {}),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - a plain flag set by uvicorn's thread
                await asyncio.sleep(0.01)
        scheme = "https" if tls else "http"
        async with httpx.AsyncClient(
            base_url=f"{scheme}://127.0.0.1:{port}", timeout=10, verify=verify
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()


async def sse(response: httpx.Response) -> AsyncIterator[Event]:
    """Events (`{"id", "event", "data"}`) and comments (`{"comment"}`) of a stream."""
    event: Event = {}
    async for line in response.aiter_lines():
        if not line:
            if event:
                yield event
                event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


async def next_where(
    events: AsyncIterator[Event], wanted: Callable[[Event], bool], within: float = 5.0
) -> Event:
    async with asyncio.timeout(within):
        async for event in events:
            if wanted(event):
                return event
    raise AssertionError("the stream ended")


def is_event(event: Event) -> bool:
    return "event" in event

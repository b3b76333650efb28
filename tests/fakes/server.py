"""Run an ASGI app with uvicorn in a background thread on a loopback port; huge answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import uvicorn
from starlette.types import ASGIApp


class ServingApp(NamedTuple):
    """Where a running app listens, and how to stop it (idempotent)."""

    base_url: str
    stop: Callable[[], None]


def free_port() -> int:
    """A loopback port that was free a moment ago (nothing listens on it once returned)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def run_app_in_thread(
    app: ASGIApp, *, startup_timeout: float = 10.0, port: int = 0
) -> Iterator[ServingApp]:
    """Serve `app` on 127.0.0.1 until the block exits (or `stop()` is called).

    `port` 0 picks a free port; a given port lets a service come back where it was before.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http="h11",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name=f"fake-server-{port}", daemon=True
    )
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()

    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"the fake server on port {port} did not start")
        time.sleep(0.005)
    try:
        yield ServingApp(f"http://127.0.0.1:{port}", stop)
    finally:
        stop()


HUGE_CHUNK = b'{"class": "person", "confidence": 0.5, "bbox": [1, 2, 3, 4]}, ' * 1024


def huge_body(size: int, count: Callable[[int], None]) -> AsyncIterator[bytes]:
    """`size` bytes of one JSON-looking chunk repeated (never held whole), each chunk counted
    with `count` as it is handed to the server."""

    async def chunks() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            chunk = HUGE_CHUNK if left >= len(HUGE_CHUNK) else HUGE_CHUNK[:left]
            left -= len(chunk)
            count(len(chunk))
            yield chunk
            # A write to a closed connection does not suspend: yield so that the server sees
            # the disconnect and stops the stream.
            await asyncio.sleep(0)

    return chunks()

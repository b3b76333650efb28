"""A minimal HTTP/1.1 client for load generation: keep-alive GETs over asyncio streams.

httpx costs the load generator more CPU per request than the API spends answering it (about
6 ms at 50 connections here, with the connection pool's bookkeeping), and on a 2-core machine the
generator and the server share the cores, so httpx would measure itself. This client writes the
request line and reads the status, the headers and a `Content-Length` (or chunked) body: tens of
microseconds per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit


class HTTPError(RuntimeError):
    """A response other than 200, or a connection that broke."""


class Connection:
    """One keep-alive connection to `base` (http://host:port)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base!r}")
        self._host, self._port = parts.hostname, parts.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._reader = self._writer = None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        """The body of a 200 answer to `GET path?params`; `HTTPError` otherwise."""
        if self._reader is None or self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        target = f"{path}?{urlencode(params)}" if params else path
        self._writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n\r\n".encode()
        )
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length: int | None = None
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            body = await (self._chunks() if chunked else self._reader.readexactly(length or 0))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            await self.close()
            raise HTTPError(f"GET {target}: the connection broke ({exc!r})") from exc
        if status != 200:
            raise HTTPError(f"GET {target}: HTTP {status}: {body[:300]!r}")
        return body

    async def _chunks(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

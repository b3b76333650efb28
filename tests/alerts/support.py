"""Builders and servers of the alert tests: events to publish, a webhook receiver that counts,
and draining the notify group (as its stage runner would) without a broker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from streams.contract import HandlerResult, StreamEntry
from streams.envelope import entry_fields, read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.schemas import (
    AnalysisCompleted,
    BatchClosed,
    BatchDetection,
    Box,
    DetectedObject,
    Entry,
)
from tests.fakes.server import run_app_in_thread

CAMERA = "front_door"
T0 = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)


def batch(
    camera: str = CAMERA,
    *,
    at: datetime = T0,
    labels: tuple[str, ...] = ("person",),
    path: str = "Front Door/a.jpg",
    detection_entry_id: str = "1-0",
    arrival_delay: float | None = None,
    zones: tuple[str, ...] = (),
) -> BatchClosed:
    objects = tuple(
        DetectedObject(
            label=label,
            confidence=0.9,
            bbox=Box(x=10, y=20, width=50, height=80),
            zones=zones if index == 0 else (),
        )
        for index, label in enumerate(labels)
    )
    return BatchClosed(
        camera_id=camera,
        batch_id=str(uuid.uuid4()),
        detections=(
            BatchDetection(
                entry_id=detection_entry_id,
                file_entry_id="1-0",
                path=path,
                captured_at=at,
                objects=objects,
            ),
        ),
        window_start=at,
        window_end=at + timedelta(seconds=5),
        close_reason="idle",
        detection_count=len(objects),
        object_types=tuple(sorted(set(labels))),
        max_confidence=0.9 if objects else 0.0,
        fast_path=False,
        closed_at=at + timedelta(seconds=35),
        arrival_delay_seconds=arrival_delay,
    )


def analysis(
    closed: BatchClosed,
    batch_entry_id: str,
    *,
    score: int = 75,
    level: str = "high",
    analyzed_at: datetime | None = None,
) -> AnalysisCompleted:
    return AnalysisCompleted(
        camera_id=closed.camera_id,
        batch_id=closed.batch_id,
        batch_entry_id=batch_entry_id,
        risk_score=score,
        risk_level=level,  # type: ignore[arg-type]  # the tables give valid levels
        summary="A person at the door",
        reasoning="person at night",
        analyzer="rules",
        latency_ms=1.0,
        analyzed_at=analyzed_at or closed.closed_at + timedelta(seconds=1),
    )


async def publish_event(
    redis: Redis,
    names: StreamNames,
    *,
    score: int = 75,
    level: str = "high",
    at: datetime = T0,
    camera: str = CAMERA,
    labels: tuple[str, ...] = ("person",),
    path: str = "Front Door/a.jpg",
    arrival_delay: float | None = None,
) -> tuple[BatchClosed, str, AnalysisCompleted, str]:
    """XADD a `batch.closed` and its `analysis.completed`: (batch, its id, analysis, its id)."""
    closed = batch(camera, at=at, labels=labels, path=path, arrival_delay=arrival_delay)
    batch_id = (await redis.xadd(names.batches(camera), entry_fields(closed))).decode()
    assessed = analysis(closed, batch_id, score=score, level=level)
    analysis_id = (await redis.xadd(names.analyses(camera), entry_fields(assessed))).decode()
    return closed, batch_id, assessed, analysis_id


async def entries(redis: Redis, stream: str) -> list[tuple[str, Entry]]:
    rows: Any = await redis.xrange(stream)
    return [(i.decode(), read_fields(f)[0]) for i, f in rows]


Handler = Callable[[str, list[StreamEntry]], Awaitable[HandlerResult]]


async def drain(
    redis: Redis, names: StreamNames, handler: Handler, camera: str = CAMERA, consumer: str = "c1"
) -> list[HandlerResult]:
    """Drain mode: hand every new entry of the camera's analyses stream (group notify) to the
    handler, as the stage runner does, until none is left."""
    stream = names.analyses(camera)
    await ensure_group(redis, stream, Group.NOTIFY.value)
    results = []
    while True:
        reply: Any = await redis.xreadgroup(Group.NOTIFY.value, consumer, {stream: ">"}, count=10)
        if not reply:
            return results
        for _, rows in reply:
            results.append(await handler(stream, [(i.decode(), f) for i, f in rows]))


async def pending(redis: Redis, names: StreamNames, camera: str = CAMERA) -> int:
    summary: Any = await redis.xpending(names.analyses(camera), Group.NOTIFY.value)
    return int(summary["pending"])


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    """Poll `condition` until it holds (a test never sleeps a fixed time)."""
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.01)


# --- a webhook receiver -------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """Answers `status` to the next `failures` requests (then 200), or `always` to every one;
    keeps every request."""

    url: str = ""
    secret: str | None = None
    failures: int = 0
    status: int = 500
    always: int | None = None
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def delivered(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.status == 200]

    def signed(self, request: Received) -> bool:
        assert self.secret is not None
        # as a receiver would, without HSI's code: t=<unix seconds>,v1=<HMAC of "t." + body>
        fields = dict(
            p.split("=", 1) for p in request.headers.get("x-hsi-signature", "").split(",")
        )
        message = fields.get("t", "").encode() + b"." + request.body
        expected = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(fields.get("t", "0"))) <= 300
        return fresh and hmac.compare_digest(fields.get("v1", ""), expected)


@contextmanager
def webhook_receiver(receiver: Receiver) -> Iterator[Receiver]:
    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        with receiver.lock:
            if receiver.always is not None:
                status = receiver.always
            elif receiver.failures > 0:
                receiver.failures -= 1
                status = receiver.status
            else:
                status = 200
            receiver.received.append(Received(dict(request.headers), body, status))
        return JSONResponse({"ok": status == 200}, status_code=status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with run_app_in_thread(app) as served:
        receiver.url = f"{served.base_url}/hook"
        yield receiver

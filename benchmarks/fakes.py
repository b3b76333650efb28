"""Zero-cost AI for the benchmarks: detectors that answer fixed objects at once.

`FixedDetector` is an in-process `Detector` (for `Pipeline(..., detector=...)`); it neither
reads nor decodes the file, so what is measured is HSI's own work around detection.
`serve_rtdetr()` is the same answer behind RT-DETR's HTTP contract, for an `hsi up` process
(`DETECTOR_BACKEND=rtdetr`): HSI still reads and uploads each file, the service only reads it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streams.detectors import BoundingBox, DetectedObject, DetectionResult

# Two objects that batch without the fast path: a batch closes at 50 objects (25 files).
CAR_AND_PERSON: tuple[DetectedObject, ...] = (
    DetectedObject("car", 0.82, BoundingBox(120.0, 340.0, 420.0, 260.0)),
    DetectedObject("person", 0.61, BoundingBox(900.0, 300.0, 140.0, 380.0)),
)
# A confident person: every file closes its own batch at once (the fast path).
CONFIDENT_PERSON: tuple[DetectedObject, ...] = (
    DetectedObject("person", 0.95, BoundingBox(900.0, 300.0, 140.0, 380.0)),
)


class FixedDetector:
    """A `Detector` that finds the same objects in every file, in no time."""

    name = "fixed"
    uses_reference = False

    def __init__(
        self, objects: tuple[DetectedObject, ...], width: int = 1920, height: int = 1080
    ) -> None:
        self._result = DetectionResult(
            objects=objects,
            image_width=width,
            image_height=height,
            inference_ms=0.0,
            detector=self.name,
        )
        self.calls = 0

    async def detect(
        self, path: Path, kind: str, *, reference: Path | None = None
    ) -> DetectionResult:
        self.calls += 1
        return self._result

    async def aclose(self) -> None:
        return None


# --- a zero-cost RT-DETR service, for `hsi up` (which builds its own detector) ---------------

RTDETR_ANSWER: dict[str, Any] = {
    "detections": [
        {
            "class": o.label,
            "confidence": o.confidence,
            "bbox": {"x": o.bbox.x, "y": o.bbox.y, "width": o.bbox.width, "height": o.bbox.height},
        }
        for o in CAR_AND_PERSON
    ],
    "inference_time_ms": 0.0,
    "image_width": 1920,
    "image_height": 1080,
}


async def _detect(request: Request) -> Response:
    await request.body()  # the upload is read, not decoded
    return JSONResponse(RTDETR_ANSWER)


@contextmanager
def serve_rtdetr() -> Iterator[str]:
    """A fake RT-DETR service (`POST /detect`, the contract of `streams.detectors.rtdetr`) on a
    loopback port, in a thread of this process, answering a car and a person at once; yields
    its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    app = Starlette(routes=[Route("/detect", _detect, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="fake-rtdetr", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake RT-DETR service did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()

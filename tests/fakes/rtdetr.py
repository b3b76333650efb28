"""A fake RT-DETR detection service: `POST /detect` with a multipart `file`, answering JSON.

It really decodes the uploaded picture (a file Pillow cannot read gets HTTP 400, like the real
service) and answers the detections a test configured. A test steers it between requests with
`answer_normally`, `fail_times`, `flap`, `answer_slowly`, `answer_garbage`, `answer_huge` and
`reject`, and reads what it saw through `requests`, `max_concurrent`, `uploads` and `bytes_sent`.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import huge_body, run_app_in_thread

PERSON: dict[str, Any] = {
    "class": "person",
    "confidence": 0.91,
    "bbox": {"x": 10.0, "y": 20.0, "width": 100.0, "height": 200.0},
}


@dataclass(frozen=True)
class Upload:
    """One received file."""

    filename: str
    content_type: str
    size: int


@dataclass
class _Behaviour:
    detections: list[dict[str, Any]] = field(default_factory=lambda: [dict(PERSON)])
    bbox_as_list: bool = False
    failures_left: int = 0
    failure_status: int = 500
    delay_seconds: float = 0.0
    garbage: bytes | None = None
    garbage_type: str = "application/json"
    reject_status: int | None = None
    flap_status: int | None = None
    huge_bytes: int = 0
    huge_declared: bool = True


class FakeRtDetr:
    """State and ASGI app of the fake service; safe to steer from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour = _Behaviour()
        self._generation = 0
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._uploads: list[Upload] = []
        self._flaps = 0
        self._bytes_sent = 0
        self.app = Starlette(routes=[Route("/detect", self._detect, methods=["POST"])])

    # --- steering -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to normal answers with one person; counters to zero."""
        with self._lock:
            self._behaviour = _Behaviour()
            self._generation += 1
            self._requests = self._in_flight = self._max_in_flight = 0
            self._uploads = []
            self._flaps = self._bytes_sent = 0

    def answer_normally(
        self, detections: list[dict[str, Any]] | None = None, *, bbox_as_list: bool = False
    ) -> None:
        """Answer 200 with `detections` (default: one person); bboxes as lists if asked."""
        with self._lock:
            if detections is not None:
                self._behaviour.detections = [dict(item) for item in detections]
            self._behaviour.bbox_as_list = bbox_as_list
            self._behaviour.failures_left = 0
            self._behaviour.garbage = None
            self._behaviour.reject_status = None
            self._behaviour.flap_status = None
            self._behaviour.huge_bytes = 0

    def fail_times(self, count: int, status: int = 500) -> None:
        """Answer `status` to the next `count` requests, then normally."""
        with self._lock:
            self._behaviour.failures_left = count
            self._behaviour.failure_status = status

    def flap(self, status: int = 500) -> None:
        """Alternate from the next request on: answer `status`, then normally, then `status`…"""
        with self._lock:
            self._behaviour.flap_status = status
            self._flaps = 0

    def answer_huge(self, size: int, *, declare_length: bool = True) -> None:
        """Answer 200 with `size` bytes, streamed, with a Content-Length or chunked."""
        with self._lock:
            self._behaviour.huge_bytes = size
            self._behaviour.huge_declared = declare_length

    def answer_slowly(self, seconds: float) -> None:
        """Wait `seconds` before answering each request."""
        with self._lock:
            self._behaviour.delay_seconds = seconds

    def answer_garbage(self, body: bytes, content_type: str = "application/json") -> None:
        """Answer 200 with `body`, whatever it is."""
        with self._lock:
            self._behaviour.garbage = body
            self._behaviour.garbage_type = content_type

    def reject(self, status: int = 400) -> None:
        """Answer `status` with an error detail, as for a picture the service refuses."""
        with self._lock:
            self._behaviour.reject_status = status

    # --- observations ---------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def max_concurrent(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def uploads(self) -> list[Upload]:
        with self._lock:
            return list(self._uploads)

    @property
    def bytes_sent(self) -> int:
        """Bytes of huge answers handed to the server so far."""
        with self._lock:
            return self._bytes_sent

    def _count_sent(self, size: int) -> None:
        with self._lock:
            self._bytes_sent += size

    # --- the service ----------------------------------------------------------------------------
    async def _detect(self, request: Request) -> Response:
        with self._lock:
            generation = self._generation
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            behaviour = _Behaviour(**vars(self._behaviour))
            if self._behaviour.failures_left > 0:
                self._behaviour.failures_left -= 1
            if behaviour.flap_status is not None:
                if self._flaps % 2 == 0:
                    behaviour.failures_left = 1
                    behaviour.failure_status = behaviour.flap_status
                self._flaps += 1
        try:
            if behaviour.delay_seconds:
                await asyncio.sleep(behaviour.delay_seconds)
            return await self._answer(request, behaviour)
        finally:
            with self._lock:
                if generation == self._generation:
                    self._in_flight -= 1

    async def _answer(self, request: Request, behaviour: _Behaviour) -> Response:
        if behaviour.failures_left > 0:
            return JSONResponse({"detail": "model crashed"}, status_code=behaviour.failure_status)
        if behaviour.reject_status is not None:
            return JSONResponse({"detail": "unsupported image"}, behaviour.reject_status)
        upload = parse_multipart_file(await request.body(), request.headers.get("content-type", ""))
        if upload is None:
            return JSONResponse({"detail": "multipart field 'file' is required"}, 422)
        filename, content_type, content = upload
        with self._lock:
            self._uploads.append(Upload(filename, content_type, len(content)))
        if behaviour.garbage is not None:
            return Response(behaviour.garbage, 200, media_type=behaviour.garbage_type)
        if behaviour.huge_bytes:
            headers = (
                {"content-length": str(behaviour.huge_bytes)} if behaviour.huge_declared else {}
            )
            return StreamingResponse(
                huge_body(behaviour.huge_bytes, self._count_sent),
                200,
                headers=headers,
                media_type="application/json",
            )
        try:
            with Image.open(io.BytesIO(content)) as picture:
                picture.load()
                width, height = picture.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return JSONResponse({"detail": f"cannot decode image: {exc}"}, 400)
        detections = [_shaped(item, behaviour.bbox_as_list) for item in behaviour.detections]
        return JSONResponse(
            {
                "detections": detections,
                "inference_time_ms": 12.5,
                "image_width": width,
                "image_height": height,
            }
        )


def _shaped(item: dict[str, Any], bbox_as_list: bool) -> dict[str, Any]:
    box = item["bbox"]
    if bbox_as_list and isinstance(box, dict):
        return {**item, "bbox": [box["x"], box["y"], box["width"], box["height"]]}
    return dict(item)


def parse_multipart_file(body: bytes, content_type: str) -> tuple[str, str, bytes] | None:
    """The (filename, content type, bytes) of the multipart/form-data field `file`, if any."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if 'name="file"' not in disposition:
            continue
        filename = disposition.partition('filename="')[2].partition('"')[0]
        return filename, headers.get("content-type", ""), content.removesuffix(b"\r\n")
    return None


@contextmanager
def serve_fake_rtdetr(
    port: int = 0, fake: FakeRtDetr | None = None
) -> Iterator[tuple[FakeRtDetr, str]]:
    """A running fake service and its base URL; on `port` when given (0: a free one), with the
    state of `fake` when given (a service coming back)."""
    fake = fake or FakeRtDetr()
    with run_app_in_thread(fake.app, port=port) as serving:
        yield fake, serving.base_url

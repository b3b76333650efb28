"""A file's spans reach a real OTLP/HTTP receiver as protobuf, in one trace."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from redis.asyncio import Redis

from hsi.infra.telemetry import TelemetryConfig, reset_telemetry, setup_telemetry
from streams.contract import StreamEntry
from streams.detectors import DetectorConfig, build_detector
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.stages.detect import DetectStage
from streams.watch.watcher import Watcher
from tests.observability.support import CAMERA, FAST, put_files


@dataclass
class Receiver:
    url: str
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def spans(self) -> list[Span]:
        return [
            span
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP traces receiver on a free loopback port, decoding each POST's protobuf."""
    found = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            found.requests.append(request)
            found.paths.append(self.path)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    found.url = f"http://{host!s}:{port}"
    yield found
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_a_files_spans_are_exported_over_otlp(
    receiver: Receiver, redis_client: Redis, key_prefix: str, root: Path
) -> None:
    """watch → detect → ai.detect arrive at <endpoint>/v1/traces as one trace."""
    reset_telemetry()
    telemetry = setup_telemetry(
        TelemetryConfig(service_name="hsi-otlp", otlp_endpoint=receiver.url)
    )
    detector = build_detector(DetectorConfig())
    try:
        names = StreamNames(key_prefix)
        watcher = Watcher(redis_client, names, root, FAST)
        (outcome,) = await watcher.ingest(put_files(root, [("cat-chelsea.jpg", "cat.jpg")]))
        stream = names.files(CAMERA)
        await ensure_group(redis_client, stream, Group.DETECT.value)
        reply: Any = await redis_client.xreadgroup(Group.DETECT.value, "t", {stream: ">"})
        entries: list[StreamEntry] = [(i.decode(), f) for i, f in reply[0][1]]
        stage = DetectStage(redis=redis_client, names=names, detector=detector, camera_root=root)
        result = await stage.handle(stream, entries)
        assert not result.failed
        assert telemetry.force_flush(10_000)
    finally:
        await detector.aclose()
        reset_telemetry()
    spans = {span.name: span for span in receiver.spans()}
    assert {"watch", "detect", "ai.detect"} <= set(spans)
    assert set(receiver.paths) == {"/v1/traces"}
    watch, detect, ai = spans["watch"], spans["detect"], spans["ai.detect"]
    assert watch.trace_id == detect.trace_id == ai.trace_id
    assert watch.parent_span_id == b""
    assert detect.parent_span_id == watch.span_id
    assert ai.parent_span_id == detect.span_id
    entry_ids = {a.value.string_value for a in detect.attributes if a.key == "hsi.entry_id"}
    assert entry_ids == {outcome.entry_id}

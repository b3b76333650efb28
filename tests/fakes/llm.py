"""A fake OpenAI-compatible LLM server: `POST /v1/chat/completions`, answering chat completions.

It checks the request like llama.cpp's server and vLLM do (JSON body with `model` and a
non-empty `messages` list; a `response_format` must be `json_schema` with a `schema` object;
a configured API key must come as `Authorization: Bearer …`) and answers the assistant text a
test scripted. A test steers it between requests with `answer_with`, `fail_times`, `flap`,
`answer_slowly`, `refuse_response_format`, `require_api_key`, `answer_garbage` and `answer_huge`,
and reads what it saw through `requests`, `bodies`, `last_body`, `last_headers` and `bytes_sent`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import huge_body, run_app_in_thread

VALID_REPLY = json.dumps(
    {
        "risk_score": 72,
        "risk_level": "high",
        "summary": "A person walked up to the front door at night.",
        "reasoning": "One person at 0.93 confidence close to the door after midnight.",
    }
)


@dataclass
class _Behaviour:
    content: str = VALID_REPLY
    finish_reason: str = "stop"
    model: str = "fake-model"
    usage: bool = True
    failures_left: int = 0
    failure_status: int = 500
    delay_seconds: float = 0.0
    refuse_response_format: bool = False
    api_key: str | None = None
    garbage: bytes | None = None
    garbage_type: str = "text/html"
    flap_status: int | None = None
    huge_bytes: int = 0
    huge_declared: bool = True


@dataclass(frozen=True)
class SeenRequest:
    """One received request: its JSON body (None if not JSON) and lower-cased headers."""

    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


class FakeLLM:
    """State and ASGI app of the fake server; safe to steer from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour = _Behaviour()
        self._seen: list[SeenRequest] = []
        self._flaps = 0
        self._bytes_sent = 0
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])]
        )

    # --- steering -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to a valid JSON answer at once, no key required; forget the requests."""
        with self._lock:
            self._behaviour = _Behaviour()
            self._seen = []
            self._flaps = self._bytes_sent = 0

    def answer_with(
        self,
        content: str,
        *,
        finish_reason: str = "stop",
        model: str = "fake-model",
        usage: bool = True,
    ) -> None:
        """Answer 200 with `content` as the assistant message (and `usage` unless False)."""
        with self._lock:
            self._behaviour.content = content
            self._behaviour.finish_reason = finish_reason
            self._behaviour.model = model
            self._behaviour.usage = usage
            self._behaviour.garbage = None
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

    def refuse_response_format(self) -> None:
        """Answer 400 to any request with `response_format`, like servers without schemas."""
        with self._lock:
            self._behaviour.refuse_response_format = True

    def require_api_key(self, key: str) -> None:
        """Answer 401 unless the request carries `Authorization: Bearer <key>`."""
        with self._lock:
            self._behaviour.api_key = key

    def answer_garbage(self, body: bytes, content_type: str = "text/html") -> None:
        """Answer 200 with `body`, whatever it is."""
        with self._lock:
            self._behaviour.garbage = body
            self._behaviour.garbage_type = content_type

    # --- observations ---------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        with self._lock:
            return len(self._seen)

    @property
    def bodies(self) -> list[dict[str, Any] | None]:
        with self._lock:
            return [seen.body for seen in self._seen]

    @property
    def last_body(self) -> dict[str, Any] | None:
        with self._lock:
            return self._seen[-1].body if self._seen else None

    @property
    def last_headers(self) -> dict[str, str]:
        with self._lock:
            return dict(self._seen[-1].headers) if self._seen else {}

    @property
    def bytes_sent(self) -> int:
        """Bytes of huge answers handed to the server so far."""
        with self._lock:
            return self._bytes_sent

    def _count_sent(self, size: int) -> None:
        with self._lock:
            self._bytes_sent += size

    # --- the service ----------------------------------------------------------------------------
    async def _complete(self, request: Request) -> Response:
        raw = await request.body()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self._seen.append(SeenRequest(body, headers))
            behaviour = _Behaviour(**vars(self._behaviour))
            if self._behaviour.failures_left > 0:
                self._behaviour.failures_left -= 1
            if behaviour.flap_status is not None:
                if self._flaps % 2 == 0:
                    behaviour.failures_left = 1
                    behaviour.failure_status = behaviour.flap_status
                self._flaps += 1
        if behaviour.delay_seconds:
            await asyncio.sleep(behaviour.delay_seconds)
        return self._answer(body, headers, behaviour)

    def _answer(
        self, body: dict[str, Any] | None, headers: dict[str, str], behaviour: _Behaviour
    ) -> Response:
        if behaviour.failures_left > 0:
            return _error(behaviour.failure_status, "server_error", "model crashed")
        if behaviour.api_key is not None and (
            headers.get("authorization") != f"Bearer {behaviour.api_key}"
        ):
            return _error(401, "authentication_error", "Invalid API Key")
        problem = _contract_problem(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        assert body is not None
        if "response_format" in body and behaviour.refuse_response_format:
            return _error(400, "invalid_request_error", "response_format is not supported")
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
        reply: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": behaviour.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": behaviour.content},
                    "finish_reason": behaviour.finish_reason,
                }
            ],
        }
        if behaviour.usage:
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            completion_tokens = len(behaviour.content.split())
            reply["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return JSONResponse(reply)


def _contract_problem(body: dict[str, Any] | None) -> str | None:
    """What is wrong with a chat-completion request body, or None."""
    if body is None:
        return "the body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "'model' is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
        ):
            return "every message needs a role of system, user or assistant"
        if not isinstance(message.get("content"), str):
            return "every message needs a string content"
    response_format = body.get("response_format")
    if response_format is not None:
        schema = (
            response_format.get("json_schema", {}).get("schema")
            if isinstance(response_format, dict) and response_format.get("type") == "json_schema"
            else None
        )
        if not isinstance(schema, dict):
            return "response_format must be {'type': 'json_schema', 'json_schema': {'schema': …}}"
    return None


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "type": kind, "message": message}}, status)


@contextmanager
def serve_fake_llm(port: int = 0, fake: FakeLLM | None = None) -> Iterator[tuple[FakeLLM, str]]:
    """A running fake server and its base URL; on `port` when given (0: a free one), with the
    state of `fake` when given (a server coming back)."""
    fake = fake or FakeLLM()
    with run_app_in_thread(fake.app, port=port) as serving:
        yield fake, serving.base_url

"""Log context: request id, trace id and bound fields carried in contextvars and put on every
record by `ContextFilter`, plus the stable event name of a record."""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from opentelemetry import trace

# --- context ------------------------------------------------------------------------------------

_EMPTY: Mapping[str, object] = MappingProxyType({})
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hsi_request_id", default=None
)
_TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("hsi_trace_id", default=None)
_FIELDS: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "hsi_log_fields", default=_EMPTY
)


def span_ids() -> tuple[str | None, str | None]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@contextmanager
def bind_context(**fields: object) -> Iterator[dict[str, object]]:
    """Bind fields to every record logged inside the block (this task/thread and what it starts).

    `request_id` and `trace_id` are kept apart (they have their own columns and log keys); the
    others are merged over what an outer block bound. Yields the resulting `current_context()`.
    """
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    if "request_id" in fields:
        value = fields.pop("request_id")
        tokens.append((_REQUEST_ID, _REQUEST_ID.set(None if value is None else str(value))))
    if "trace_id" in fields:
        value = fields.pop("trace_id")
        tokens.append((_TRACE_ID, _TRACE_ID.set(None if value is None else str(value))))
    if fields:
        merged = MappingProxyType({**_FIELDS.get(), **fields})
        tokens.append((_FIELDS, _FIELDS.set(merged)))
    try:
        yield current_context()
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, object]:
    """The bound fields plus `request_id` and `trace_id` (the active span's first) when known."""
    context: dict[str, object] = dict(_FIELDS.get())
    request_id = _REQUEST_ID.get()
    trace_id = span_ids()[0] or _TRACE_ID.get()
    if request_id is not None:
        context["request_id"] = request_id
    if trace_id is not None:
        context["trace_id"] = trace_id
    return context


# Attributes every record has (plus what formatters and this module add): anything else on a
# record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__,
        "message", "asctime", "taskName", "hsi_event", "hsi_fields", "hsi_context", "span_id",
        "color_message",  # uvicorn's ANSI-coloured copy of the message
    }
)  # fmt: skip
_EVENT_NAME = re.compile(r"^[a-z0-9_]+(?:\.[a-z0-9_]+)+$")


def event_of(record: logging.LogRecord) -> str | None:
    """The stable event name: given via `log_event()`/`EventLogger`, or a dotted lowercase
    message without arguments (`logger.info("file.observed", extra={...})`)."""
    event = getattr(record, "hsi_event", None)
    if event is not None:
        return str(event)
    if not record.args and isinstance(record.msg, str) and _EVENT_NAME.match(record.msg):
        return record.msg
    return None


def attach_context(record: logging.LogRecord) -> dict[str, object]:
    """Store the caller's context on the record once (on the caller's thread) and return it."""
    existing: dict[str, object] | None = getattr(record, "hsi_context", None)
    if existing is not None:
        return existing
    call_fields: Mapping[str, object] = getattr(record, "hsi_fields", None) or _EMPTY
    # Plain `logger.info("x", extra={...})` (code that may not import hsi, like `streams`) gives
    # its fields as record attributes; they count as call fields too.
    fields = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES}
    fields.update(call_fields)
    request_id = fields.pop("request_id", None) or _REQUEST_ID.get()
    explicit_trace = fields.pop("trace_id", None)
    span_trace, span_id = span_ids()
    trace_id = explicit_trace or span_trace or _TRACE_ID.get()
    context = {**fields, **{k: v for k, v in _FIELDS.get().items() if k not in fields}}
    record.hsi_context = context
    record.request_id = None if request_id is None else str(request_id)
    record.trace_id = None if trace_id is None else str(trace_id)
    record.span_id = span_id
    return context


class ContextFilter(logging.Filter):
    """Adds `hsi_context`, `request_id`, `trace_id` and `span_id` to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        attach_context(record)
        return True

"""Structured logging for HSI: console, rotating file and PostgreSQL, with bound context.

Call sites log stable event names with structured fields::

    log = get_logger(__name__)
    with bind_context(camera="front", request_id=request_id):
        log.info("file.observed", path=str(path), size=size)

Every record that reaches an HSI handler carries the bound context (`bind_context()`), the
request id and the trace id (the active OpenTelemetry span's, else the bound one). The console and
file show it as `time level logger event key=value…` or as one JSON object per line.

`setup_logging()` installs the handlers on the root logger once (calling it again with the same
configuration changes nothing, with another one replaces HSI's handlers); `reset_logging()` removes
them again (the test suite calls it). Nothing happens at import time.

`PostgresLogHandler` stores records in the `logs` table without ever touching the database on the
caller's thread: `emit()` only puts the record on a bounded queue and a daemon thread writes
batches with its own synchronous psycopg connection. Secrets are masked (`sanitize_error()`,
`mask_secrets()`) before anything is written anywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.handlers
import math
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO, TypeAlias

import psycopg
import psycopg.errors
from opentelemetry import trace

if TYPE_CHECKING:
    from hsi.config import Settings

__all__ = [
    "ContextFilter",
    "EventLogger",
    "JsonFormatter",
    "LoggingConfig",
    "PlainFormatter",
    "PostgresLogHandler",
    "bind_context",
    "current_context",
    "get_logger",
    "libpq_conninfo",
    "log_event",
    "mask_secrets",
    "reset_logging",
    "sanitize_error",
    "setup_logging",
]

LogFormat = Literal["plain", "json"]
ExcInfo: TypeAlias = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)

# --- secrets ------------------------------------------------------------------------------------

_MASK = "***"
_TRUNCATED = "…[truncated]"
_SENSITIVE_WORDS = r"password|passwd|pwd|secret|token|api[_-]?key|apikey"

# scheme://user:password@host — the password runs to the last "@" before a space or slash.
_URL_CREDENTIALS = re.compile(
    r"(?P<prefix>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*):(?P<secret>[^\s/]*)@", re.IGNORECASE
)
_AUTHORIZATION = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>basic|bearer|digest|token|negotiate)\s+)?"
    r"(?P<secret>[^\s,;'\"]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<scheme>bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# password=…, "api_key": "…", X-API-Key: …, PGPASSWORD=…: a key that ends in a secret word.
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![\w-])[\w-]*?(?:{_SENSITIVE_WORDS})(?![\w-]))"
    r"(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&'\"]+)",
    re.IGNORECASE,
)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")
_SECRET_KEY_NAME = re.compile(
    rf"(?:^|[_\-.])(?:{_SENSITIVE_WORDS}|authorization|credentials?)$", re.IGNORECASE
)
_PATH_CHARS = r"[^\s/\\'\"(),;:<>|]"
# An absolute path of three or more parts (`/a/b/c`, `C:\a\b\c`) that is not part of a URL.
_POSIX_PATH = re.compile(
    rf"(?<![\w.~:/\\-])/(?:{_PATH_CHARS}+/)+(?P<tail>{_PATH_CHARS}+/{_PATH_CHARS}+)"
)
_WINDOWS_PATH = re.compile(
    rf"\b[A-Za-z]:\\(?:{_PATH_CHARS}+\\)+(?P<tail>{_PATH_CHARS}+\\{_PATH_CHARS}+)"
)


def _mask_key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{_MASK}{quote}"


def _mask_authorization(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    return f"{match.group('head')}{scheme + ' ' if scheme else ''}{_MASK}"


def mask_secrets(text: str) -> str:
    """`text` with passwords, tokens and API keys replaced by `***`; everything else kept."""
    if not text:
        return text
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('prefix')}:{_MASK}@", text)
    text = _AUTHORIZATION.sub(_mask_authorization, text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')} {_MASK}", text)
    text = _KEY_VALUE.sub(_mask_key_value, text)
    return _OPENAI_KEY.sub(f"sk-{_MASK}", text)


def _shorten_paths(text: str) -> str:
    text = _POSIX_PATH.sub(lambda m: f"…/{m.group('tail')}", text)
    return _WINDOWS_PATH.sub(lambda m: f"…\\{m.group('tail')}", text)


def _describe(value: object) -> str:
    if isinstance(value, BaseException):
        detail = str(value)
        return f"{type(value).__name__}: {detail}" if detail else type(value).__name__
    return str(value)


def _truncate(text: str, max_length: int, *, keep_tail: bool = False) -> str:
    if len(text) <= max_length:
        return text
    if max_length <= len(_TRUNCATED):
        return text[-max_length:] if keep_tail else text[:max_length]
    keep = max_length - len(_TRUNCATED)
    return _TRUNCATED + text[-keep:] if keep_tail else text[:keep] + _TRUNCATED


def sanitize_error(value: object, max_length: int = 500) -> str:
    """A message that is safe to show and store: secrets masked, long absolute paths cut to
    `…/last/two`, NUL bytes removed, at most `max_length` characters (`…[truncated]` marks a cut).

    Exceptions are described as `TypeName: message`.
    """
    text = _shorten_paths(mask_secrets(_describe(value).replace("\x00", "")))
    return _truncate(text, max(0, max_length))


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_NAME.search(key))


# --- context ------------------------------------------------------------------------------------

_EMPTY: Mapping[str, object] = MappingProxyType({})
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hsi_request_id", default=None
)
_TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("hsi_trace_id", default=None)
_FIELDS: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "hsi_log_fields", default=_EMPTY
)


def _span_ids() -> tuple[str | None, str | None]:
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
    trace_id = _span_ids()[0] or _TRACE_ID.get()
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


def _event_of(record: logging.LogRecord) -> str | None:
    """The stable event name: given via `log_event()`/`EventLogger`, or a dotted lowercase
    message without arguments (`logger.info("file.observed", extra={...})`)."""
    event = getattr(record, "hsi_event", None)
    if event is not None:
        return str(event)
    if not record.args and isinstance(record.msg, str) and _EVENT_NAME.match(record.msg):
        return record.msg
    return None


def _attach_context(record: logging.LogRecord) -> dict[str, object]:
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
    span_trace, span_id = _span_ids()
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
        _attach_context(record)
        return True


# --- event logging ------------------------------------------------------------------------------


def log_event(
    logger: logging.Logger | EventLogger,
    event: str,
    /,
    *,
    level: int = logging.INFO,
    exc_info: ExcInfo = None,
    **fields: object,
) -> None:
    """Log the stable `event` name with structured `fields` on a plain or event logger."""
    target = logger.logger if isinstance(logger, EventLogger) else logger
    if target.isEnabledFor(level):
        target.log(
            level,
            event,
            exc_info=exc_info,
            stacklevel=2,
            extra={"hsi_event": event, "hsi_fields": fields},
        )


class EventLogger:
    """A logger whose calls read `log.info("event.name", key=value, …)`."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    @property
    def name(self) -> str:
        return self.logger.name

    def is_enabled_for(self, level: int) -> bool:
        return self.logger.isEnabledFor(level)

    def _emit(
        self, level: int, event: str, exc_info: ExcInfo, stack_info: bool, fields: dict[str, object]
    ) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                event,
                exc_info=exc_info,
                stack_info=stack_info,
                stacklevel=3,
                extra={"hsi_event": event, "hsi_fields": fields},
            )

    def log(
        self,
        level: int,
        event: str,
        /,
        *,
        exc_info: ExcInfo = None,
        stack_info: bool = False,
        **fields: object,
    ) -> None:
        self._emit(level, event, exc_info, stack_info, fields)

    def debug(
        self, event: str, /, *, exc_info: ExcInfo = None, stack_info: bool = False, **fields: object
    ) -> None:
        self._emit(logging.DEBUG, event, exc_info, stack_info, fields)

    def info(
        self, event: str, /, *, exc_info: ExcInfo = None, stack_info: bool = False, **fields: object
    ) -> None:
        self._emit(logging.INFO, event, exc_info, stack_info, fields)

    def warning(
        self, event: str, /, *, exc_info: ExcInfo = None, stack_info: bool = False, **fields: object
    ) -> None:
        self._emit(logging.WARNING, event, exc_info, stack_info, fields)

    def error(
        self, event: str, /, *, exc_info: ExcInfo = None, stack_info: bool = False, **fields: object
    ) -> None:
        self._emit(logging.ERROR, event, exc_info, stack_info, fields)

    def exception(
        self, event: str, /, *, exc_info: ExcInfo = True, stack_info: bool = False, **fields: object
    ) -> None:
        self._emit(logging.ERROR, event, exc_info, stack_info, fields)

    def critical(
        self, event: str, /, *, exc_info: ExcInfo = None, stack_info: bool = False, **fields: object
    ) -> None:
        self._emit(logging.CRITICAL, event, exc_info, stack_info, fields)


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name))


# --- formatting ---------------------------------------------------------------------------------

_JSON_KEYS = frozenset(
    {"timestamp", "level", "logger", "message", "event", "service", "request_id", "trace_id",
     "span_id", "exception", "stack"}
)  # fmt: skip
_MAX_DEPTH = 6


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _jsonable(value: object, depth: int = 0) -> object:
    """A JSON- and jsonb-safe copy: strings masked and NUL-free, NaN/inf as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return mask_secrets(value.replace("\x00", ""))
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                str(k).replace("\x00", ""): (
                    _MASK if _is_secret_key(str(k)) else _jsonable(v, depth + 1)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(v, depth + 1) for v in value]
    return mask_secrets(str(value).replace("\x00", ""))


def _safe_fields(context: Mapping[str, object]) -> dict[str, object]:
    return {k: _MASK if _is_secret_key(k) else _jsonable(v) for k, v in context.items()}


def _plain_value(value: object) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class _HsiFormatter(logging.Formatter):
    def _exception_text(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [p for p in (record.exc_text, record.stack_info) if p]
        return "\n".join(parts) if parts else None


class PlainFormatter(_HsiFormatter):
    """`2024-05-01T12:00:00.000Z INFO hsi.watcher file.observed camera=front trace_id=…`."""

    def format(self, record: logging.LogRecord) -> str:
        context = _safe_fields(_attach_context(record))
        parts = [_timestamp(record.created), record.levelname, record.name, record.getMessage()]
        parts.extend(f"{k}={_plain_value(v)}" for k, v in context.items() if v is not None)
        for key in ("request_id", "trace_id"):
            value = getattr(record, key, None)
            if value is not None:
                parts.append(f"{key}={_plain_value(value)}")
        line = " ".join(parts)
        exception = self._exception_text(record)
        if exception:
            line = f"{line}\n{exception}"
        return mask_secrets(line)


class JsonFormatter(_HsiFormatter):
    """One JSON object per line: timestamp, level, logger, message (and event), service, the
    context fields (a field that collides with those keys is written as `ctx_<name>`), ids."""

    def __init__(self, service_name: str | None = None) -> None:
        super().__init__()
        self.service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        context = _safe_fields(_attach_context(record))
        out: dict[str, object] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        event = _event_of(record)
        if event is not None:
            out["event"] = event
        if self.service_name:
            out["service"] = self.service_name
        for key, value in context.items():
            out[f"ctx_{key}" if key in _JSON_KEYS else key] = value
        for key in ("request_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = mask_secrets(record.exc_text)
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str)


# --- PostgreSQL handler -------------------------------------------------------------------------

# Records of these loggers never go to the database: the writer's own driver would log about the
# write it is doing (endless recursion), and this module's records describe the handler itself.
_SKIPPED_LOGGERS = ("psycopg", "sqlalchemy", __name__)
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_COPY_SQL = (
    "COPY logs (created_at, level, logger, message, context, request_id, trace_id, exception) "
    "FROM STDIN"
)
_INSERT_SQL = (
    "INSERT INTO logs (created_at, level, logger, message, context, request_id, trace_id, "
    "exception) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
# Errors that mean "PostgreSQL cannot take records now": keep them and retry later. The table
# may be missing for a moment at startup, before the migrations ran.
_OUTAGE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.UndefinedTable)
_WRITER_THREAD = threading.local()
_EXCEPTION_FORMATTER = logging.Formatter()


def _in_writer_thread() -> bool:
    return bool(getattr(_WRITER_THREAD, "active", False))


def _skipped_logger(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _SKIPPED_LOGGERS)


def libpq_conninfo(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://…`, `postgres://…`) as a libpq URI.

    A libpq `key=value` string is returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme.split("+", 1)[0].lower() not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {sanitize_error(url, 200)}")
    return f"postgresql://{rest}"


@dataclass(frozen=True, slots=True)
class _Entry:
    created: float
    level: str
    logger: str
    message: str
    context: dict[str, object]
    request_id: str | None
    trace_id: str | None
    span_id: str | None
    exception: str | None


class _Control:
    """A marker on the queue: write what came before it now (and stop, for `close`)."""

    __slots__ = ("done", "stop")

    def __init__(self, *, stop: bool) -> None:
        self.done = threading.Event()
        self.stop = stop


_QueueItem: TypeAlias = _Entry | _Control


class PostgresLogHandler(logging.Handler):
    """Writes records to the `logs` table from a background thread, in batches.

    `emit()` never blocks and never raises: it puts the record on a queue of `queue_size`; when
    the queue is full the record is dropped and counted (`dropped`). The writer thread collects
    up to `batch_size` records or waits `flush_interval` seconds, then COPYs the batch in with its
    own autocommit psycopg connection (`schema` pins the search_path). While PostgreSQL is down it
    keeps at most `max_backlog` records (oldest dropped first), reconnects with exponential backoff
    from `retry_initial` to `retry_max` seconds, and writes one warning line to stderr per outage
    (not through logging) and one when it is over, with the number of records dropped.

    Records from psycopg, SQLAlchemy and this module, and anything logged on the writer thread,
    are skipped (`skipped`) so that writing a record never produces another.
    """

    def __init__(
        self,
        url: str,
        *,
        level: int | str = logging.WARNING,
        schema: str | None = None,
        batch_size: int = 200,
        flush_interval: float = 1.0,
        queue_size: int = 10_000,
        max_backlog: int = 10_000,
        connect_timeout: float = 5.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        message_max_length: int = 2000,
        exception_max_length: int = 20_000,
    ) -> None:
        super().__init__(level)
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r} is not a plain identifier")
        if batch_size < 1 or queue_size < 1 or max_backlog < 1 or flush_interval <= 0:
            raise ValueError("batch_size, queue_size, max_backlog and flush_interval must be > 0")
        self._conninfo = libpq_conninfo(url)
        self._schema = schema
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backlog = max_backlog
        self._connect_timeout = max(2, math.ceil(connect_timeout))
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._message_max = message_max_length
        self._exception_max = exception_max_length
        self._queue: queue.Queue[_QueueItem] = queue.Queue(maxsize=queue_size)
        self._stats_lock = threading.Lock()
        self._dropped = 0
        self._skipped = 0
        self._written = 0
        self._backlog_size = 0
        self._closed = False
        self._stopping = threading.Event()
        # Writer-thread state.
        self._conn: psycopg.Connection[Any] | None = None
        self._first_at = 0.0
        self._retry_at = 0.0
        self._retry_delay = retry_initial
        self._outage = False
        self._outage_dropped = 0
        self._thread = threading.Thread(target=self._run, name="hsi-log-writer", daemon=True)
        self._thread.start()

    # -- statistics --------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Records lost: queue full, backlog full during an outage, or rejected by PostgreSQL."""
        return self._dropped

    @property
    def skipped(self) -> int:
        """Records deliberately not stored (driver loggers, the writer thread's own records)."""
        return self._skipped

    @property
    def written(self) -> int:
        return self._written

    @property
    def pending(self) -> int:
        """Records queued or waiting in the writer's backlog."""
        return self._queue.qsize() + self._backlog_size

    @property
    def queue_size(self) -> int:
        return self._queue.maxsize

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _count(self, *, dropped: int = 0, skipped: int = 0, written: int = 0) -> None:
        with self._stats_lock:
            self._dropped += dropped
            self._skipped += skipped
            self._written += written

    # -- caller side -------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        if _in_writer_thread() or _skipped_logger(record.name):
            self._count(skipped=1)
            return
        if self._closed:
            self._count(dropped=1)
            return
        try:
            self._queue.put_nowait(self._entry(record))
        except Exception:  # queue.Full, or a record whose message cannot be formatted
            self._count(dropped=1)

    def _entry(self, record: logging.LogRecord) -> _Entry:
        context = _attach_context(record)
        exception = record.exc_text
        if record.exc_info and not exception:
            exception = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.stack_info:
            exception = f"{exception}\n{record.stack_info}" if exception else record.stack_info
        return _Entry(
            created=record.created,
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
            context=dict(context),
            request_id=getattr(record, "request_id", None),
            trace_id=getattr(record, "trace_id", None),
            span_id=getattr(record, "span_id", None),
            exception=exception,
        )

    def drain(self, timeout: float = 5.0) -> bool:
        """Have the writer store everything queued so far; True when nothing is left pending."""
        if self._closed or not self._thread.is_alive():
            return self.pending == 0
        deadline = time.monotonic() + timeout
        control = _Control(stop=False)
        try:
            self._queue.put(control, timeout=max(0.0, timeout))
        except queue.Full:
            return False
        if not control.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        return self._backlog_size == 0

    def flush(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` seconds for the queued records to be written (`drain()`)."""
        self.drain(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout` seconds), stop the thread, close the connection."""
        with self._stats_lock:
            already = self._closed
            self._closed = True
        if not already:
            self._stopping.set()
            deadline = time.monotonic() + timeout
            with contextlib.suppress(queue.Full):  # the writer also watches `_stopping`
                self._queue.put(_Control(stop=True), timeout=max(0.0, timeout))
            self._thread.join(max(0.0, deadline - time.monotonic()))
        super().close()

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        _WRITER_THREAD.active = True  # emit() skips whatever is logged on this thread
        backlog: deque[_Entry] = deque()
        waiters: list[_Control] = []
        stopping = False
        while not stopping:
            try:
                stopping = self._collect(backlog, waiters)
                now = time.monotonic()
                due = bool(backlog) and (
                    stopping
                    or bool(waiters)
                    or len(backlog) >= self._batch_size
                    or now - self._first_at >= self._flush_interval
                )
                if due and (stopping or now >= self._retry_at):
                    self._write_backlog(backlog)
            except Exception as exc:  # the writer must survive anything
                self._note_dropped(len(backlog))
                backlog.clear()
                self._warn(f"log writer error, records dropped: {sanitize_error(exc, 300)}")
                self._disconnect()
            finally:
                if stopping:
                    self._note_dropped(len(backlog))
                    backlog.clear()
                self._backlog_size = len(backlog)
                for waiter in waiters:
                    waiter.done.set()
                waiters.clear()
        self._disconnect()

    def _collect(self, backlog: deque[_Entry], waiters: list[_Control]) -> bool:
        """Move queued records to the backlog: wait for the first, take what else is there (up to
        a batch; everything when stopping). Returns whether the handler is stopping."""
        timeout = self._flush_interval
        if backlog:
            wake = max(self._first_at + self._flush_interval, self._retry_at)
            timeout = min(self._flush_interval, max(0.01, wake - time.monotonic()))
        stopping = False
        block = True
        while True:
            try:
                item = self._queue.get(timeout=timeout) if block else self._queue.get_nowait()
            except queue.Empty:
                break
            block = False
            if isinstance(item, _Control):
                waiters.append(item)
                stopping = stopping or item.stop
                continue
            if not backlog:
                self._first_at = time.monotonic()
            backlog.append(item)
            if len(backlog) > self._max_backlog:
                backlog.popleft()
                self._note_dropped(1)
            if len(backlog) >= self._batch_size and not (stopping or self._stopping.is_set()):
                break
        return stopping or self._stopping.is_set()

    def _note_dropped(self, count: int) -> None:
        if count:
            self._count(dropped=count)
            if self._outage:
                self._outage_dropped += count

    def _warn(self, text: str) -> None:
        try:
            sys.stderr.write(f"hsi: {text}\n")
            sys.stderr.flush()
        except Exception:  # noqa: S110 - stderr itself is gone; nowhere left to tell
            pass

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            kwargs: dict[str, Any] = {
                "autocommit": True,
                "connect_timeout": self._connect_timeout,
                "application_name": "hsi-log-writer",
            }
            if self._schema is not None:
                kwargs["options"] = f"-c search_path={self._schema}"
            self._conn = psycopg.connect(self._conninfo, **kwargs)
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                conn.close()

    def _row(self, entry: _Entry) -> tuple[object, ...]:
        context = _safe_fields(entry.context)
        if entry.span_id is not None:
            context.setdefault("span_id", entry.span_id)
        exception = None
        if entry.exception is not None:
            text = _shorten_paths(mask_secrets(entry.exception.replace("\x00", "")))
            exception = _truncate(text, self._exception_max, keep_tail=True)
        return (
            datetime.fromtimestamp(entry.created, UTC),
            entry.level,
            entry.logger.replace("\x00", "")[:255],
            sanitize_error(entry.message, self._message_max),
            json.dumps(context, ensure_ascii=False, default=str),
            None if entry.request_id is None else sanitize_error(entry.request_id, 200),
            None if entry.trace_id is None else sanitize_error(entry.trace_id, 64),
            exception,
        )

    def _write_backlog(self, backlog: deque[_Entry]) -> None:
        """Write the backlog in batches; on an outage keep the rest (bounded) and back off."""
        while backlog:
            batch = [backlog[i] for i in range(min(self._batch_size, len(backlog)))]
            try:
                self._copy(batch)
            except _OUTAGE_ERRORS as exc:
                self._start_outage(exc)
                return
            except psycopg.Error:
                # One bad row fails the whole COPY: insert one by one, drop what is refused.
                for _ in batch:
                    try:
                        self._insert(backlog[0])
                    except _OUTAGE_ERRORS as exc:
                        self._start_outage(exc)
                        return
                    except psycopg.Error:
                        self._note_dropped(1)
                    backlog.popleft()
            else:
                for _ in batch:
                    backlog.popleft()
            self._end_outage()

    def _rows(self, batch: list[_Entry]) -> list[tuple[object, ...]]:
        rows = []
        for entry in batch:
            try:
                rows.append(self._row(entry))
            except Exception:  # a record that cannot be converted is dropped, not the batch
                self._note_dropped(1)
        return rows

    def _copy(self, batch: list[_Entry]) -> None:
        rows = self._rows(batch)
        conn = self._connection()
        with conn.cursor() as cur, cur.copy(_COPY_SQL) as copy:
            for row in rows:
                copy.write_row(row)
        self._count(written=len(rows))

    def _insert(self, entry: _Entry) -> None:
        rows = self._rows([entry])
        if rows:
            self._connection().execute(_INSERT_SQL, rows[0])
            self._count(written=1)

    def _start_outage(self, exc: BaseException) -> None:
        self._disconnect()
        now = time.monotonic()
        if not self._outage:
            self._outage = True
            self._outage_dropped = 0
            self._retry_delay = self._retry_initial
            self._warn(
                "log records cannot be written to PostgreSQL "
                f"({sanitize_error(exc, 300)}); retrying with backoff, keeping at most "
                f"{self._max_backlog} records"
            )
        else:
            self._retry_delay = min(self._retry_max, self._retry_delay * 2)
        self._retry_at = now + self._retry_delay

    def _end_outage(self) -> None:
        if self._outage:
            self._outage = False
            self._retry_at = 0.0
            self._retry_delay = self._retry_initial
            self._warn(
                f"log records reach PostgreSQL again ({self._outage_dropped} dropped meanwhile)"
            )


# --- setup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: LogFormat = "plain"
    file: Path | None = None
    file_max_bytes: int = 10 * 1024 * 1024
    file_backup_count: int = 5
    db_url: str | None = None
    db_min_level: str = "WARNING"
    db_schema: str | None = None
    service_name: str = "hsi"

    @classmethod
    def from_settings(cls, settings: Settings, db_url: str | None = None) -> LoggingConfig:
        """`db_url` (e.g. the embedded server's) overrides `DATABASE_URL`; the database handler is
        attached only when `LOG_DB_ENABLED` is true."""
        return cls(
            level=settings.log_level,
            format=settings.log_format,
            file=settings.log_file,
            file_max_bytes=settings.log_file_max_bytes,
            file_backup_count=settings.log_file_backup_count,
            db_url=(db_url or settings.database_url) if settings.log_db_enabled else None,
            db_min_level=settings.log_db_min_level,
            service_name=settings.otel_service_name,
        )


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time of the record (test capture swaps it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


@dataclass
class _LoggingState:
    config: LoggingConfig
    stream: IO[str] | None
    handlers: list[logging.Handler]
    previous_level: int


_STATE: _LoggingState | None = None
_STATE_LOCK = threading.Lock()


def _level(value: str | int) -> int:
    if isinstance(value, int):
        return value
    level = logging.getLevelNamesMapping().get(value.upper())
    if level is None:
        raise ValueError(f"unknown log level {value!r}")
    return level


def _formatter(config: LoggingConfig) -> logging.Formatter:
    if config.format == "json":
        return JsonFormatter(config.service_name)
    return PlainFormatter()


def _build_handlers(config: LoggingConfig, stream: IO[str] | None) -> list[logging.Handler]:
    handlers: list[logging.Handler] = []
    try:
        handlers.append(_StderrHandler() if stream is None else logging.StreamHandler(stream))
        if config.file is not None:
            config.file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    config.file,
                    maxBytes=config.file_max_bytes,
                    backupCount=config.file_backup_count,
                    encoding="utf-8",
                )
            )
        for handler in handlers:
            handler.setFormatter(_formatter(config))
        if config.db_url is not None:
            handlers.append(
                PostgresLogHandler(
                    config.db_url, level=_level(config.db_min_level), schema=config.db_schema
                )
            )
    except BaseException:
        for handler in handlers:
            handler.close()
        raise
    context_filter = ContextFilter()
    for handler in handlers:
        handler.addFilter(context_filter)
    return handlers


def setup_logging(config: LoggingConfig, *, stream: IO[str] | None = None) -> None:
    """Install HSI's handlers on the root logger: console (`stream`, default the current stderr),
    a rotating file when `config.file` is set, PostgreSQL when `config.db_url` is set.

    Calling it again with the same arguments does nothing; with others it replaces the handlers
    (when the new ones cannot be built, the old ones stay and the error is raised).
    """
    global _STATE
    with _STATE_LOCK:
        if _STATE is not None and _STATE.config == config and _STATE.stream is stream:
            return
        level = _level(config.level)
        handlers = _build_handlers(config, stream)
        root = logging.getLogger()
        previous_level = _teardown()
        if previous_level is None:
            previous_level = root.level
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        _STATE = _LoggingState(
            config=config, stream=stream, handlers=handlers, previous_level=previous_level
        )


def _teardown() -> int | None:
    """Remove and close HSI's handlers; return the root level from before the first setup."""
    global _STATE
    state, _STATE = _STATE, None
    if state is None:
        return None
    root = logging.getLogger()
    for handler in state.handlers:
        root.removeHandler(handler)
        with contextlib.suppress(Exception):  # one failing must not keep the others open
            handler.close()
    return state.previous_level


def reset_logging() -> None:
    """Remove HSI's handlers and restore the root level (tests call this between cases)."""
    with _STATE_LOCK:
        previous_level = _teardown()
        if previous_level is not None:
            logging.getLogger().setLevel(previous_level)

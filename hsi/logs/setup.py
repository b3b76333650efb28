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
import json
import logging
import logging.handlers
import re
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, TextIO

from hsi.logs.context import (
    ContextFilter,
    attach_context,
    bind_context,
    current_context,
    event_of,
)
from hsi.logs.postgres import PostgresLogHandler, libpq_conninfo
from hsi.logs.redact import mask_secrets, safe_fields, sanitize_error
from streams.logs import ExcInfo, event_extra, log_event

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


# --- event logging ------------------------------------------------------------------------------


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
                extra=event_extra(event, fields),
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
MAX_DEPTH = 6
_NEEDS_QUOTES = re.compile(r"[\s\"'=]")  # `\s` is `str.isspace()`


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _plain_value(value: object) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    if not text or _NEEDS_QUOTES.search(text):
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
        context = safe_fields(attach_context(record))
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
        context = safe_fields(attach_context(record))
        out: dict[str, object] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        event = event_of(record)
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

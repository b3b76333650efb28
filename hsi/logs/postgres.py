"""`PostgresLogHandler`: log records into the `logs` table in batches from a thread of its own.

emit() never touches the database on the caller's thread; a database outage drops records
quietly (counted, one warning on stderr per outage) and never recurses into logging."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import psycopg
import psycopg.errors

from hsi.logs.context import attach_context
from hsi.logs.redact import mask_secrets, safe_fields, sanitize_error, shorten_paths, truncate

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
        context = attach_context(record)
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
        context = safe_fields(entry.context)
        if entry.span_id is not None:
            context.setdefault("span_id", entry.span_id)
        exception = None
        if entry.exception is not None:
            text = shorten_paths(mask_secrets(entry.exception.replace("\x00", "")))
            exception = truncate(text, self._exception_max, keep_tail=True)
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

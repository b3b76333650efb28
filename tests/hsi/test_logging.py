"""Structured logging: console and file output, context, secret masking, the PostgreSQL handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.infra.db import migrate
from hsi.logs.setup import (
    LoggingConfig,
    PostgresLogHandler,
    bind_context,
    current_context,
    get_logger,
    libpq_conninfo,
    log_event,
    mask_secrets,
    reset_logging,
    sanitize_error,
    setup_logging,
)
from hsi.settings import components
from hsi.settings.model import Settings
from tests.waiting import wait_until

DOWN_URL = "postgresql+psycopg://hsi:db-secret-pw@127.0.0.1:1/hsi"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    reset_logging()
    yield
    reset_logging()


@pytest.fixture
def root_at_debug() -> Iterator[None]:
    """Root and psycopg loggers at DEBUG for the test, restored afterwards."""
    root, driver = logging.getLogger(), logging.getLogger("psycopg")
    levels = root.level, driver.level
    root.setLevel(logging.DEBUG)
    driver.setLevel(logging.DEBUG)
    yield
    root.setLevel(levels[0])
    driver.setLevel(levels[1])


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(stream)]


# --- console and file -------------------------------------------------------------------------


def test_plain_console_shows_event_and_bound_context() -> None:
    """A plain line reads `time level logger event key=value…` with the bound context."""
    out = io.StringIO()
    setup_logging(LoggingConfig(level="DEBUG"), stream=out)
    log = get_logger("hsi.test.watcher")
    with bind_context(camera="front", request_id="req-1"):
        log.info("file.observed", path="/cams/front one/a.jpg", size=2048)
    (line,) = _lines(out)
    timestamp, level, logger, event, *fields = line.split(" ", 4)
    assert timestamp.endswith("Z")
    assert "T" in timestamp
    assert (level, logger, event) == ("INFO", "hsi.test.watcher", "file.observed")
    rest = fields[0]
    assert 'path="/cams/front one/a.jpg"' in rest
    assert "size=2048" in rest
    assert "camera=front" in rest
    assert "request_id=req-1" in rest


def test_json_console_is_one_object_per_line_with_context() -> None:
    """JSON output: one object per line with timestamp, level, logger, event and the fields."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json", service_name="hsi-test"), stream=out)
    log = get_logger("hsi.test.detect")
    with bind_context(camera="garage", stream="hsi:detections", entry_id="1-0"):
        log.warning("detection.slow", seconds=3.5, labels=["person", "car"])
        logging.getLogger("other.lib").warning("plain %s message", "formatted")
    first, second = _json_lines(out)
    assert first["event"] == "detection.slow"
    assert first["message"] == "detection.slow"
    assert first["level"] == "WARNING"
    assert first["logger"] == "hsi.test.detect"
    assert first["service"] == "hsi-test"
    assert str(first["timestamp"]).endswith("Z")
    assert first["camera"] == "garage"
    assert first["stream"] == "hsi:detections"
    assert first["entry_id"] == "1-0"
    assert first["seconds"] == 3.5
    assert first["labels"] == ["person", "car"]
    assert "event" not in second
    assert second["message"] == "plain formatted message"
    assert second["camera"] == "garage"


def test_trace_id_comes_from_the_active_span() -> None:
    """Inside a span the records carry its trace and span ids; outside, the bound trace id."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    tracer = TracerProvider().get_tracer("test")
    log = get_logger("hsi.test.trace")
    with tracer.start_as_current_span("work") as span:
        log.info("inside")
        context = current_context()
    with bind_context(trace_id="f" * 32):
        log.info("outside")
    inside, outside = _json_lines(out)
    expected = format(span.get_span_context().trace_id, "032x")
    assert inside["trace_id"] == expected
    assert context["trace_id"] == expected
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert outside["trace_id"] == "f" * 32
    assert "span_id" not in outside


def test_bind_context_nests_and_restores() -> None:
    """Inner blocks add and override fields; leaving a block restores the outer context."""
    assert current_context() == {}
    with bind_context(camera="front", request_id="r1") as outer:
        assert outer == {"camera": "front", "request_id": "r1"}
        with bind_context(camera="back", stage="detect") as inner:
            assert inner == {"camera": "back", "stage": "detect", "request_id": "r1"}
        assert current_context() == {"camera": "front", "request_id": "r1"}
    assert current_context() == {}


async def test_bound_context_stays_within_its_task() -> None:
    """Concurrent tasks each see only what they bound themselves."""

    async def work(camera: str) -> dict[str, object]:
        with bind_context(camera=camera):
            await asyncio.sleep(0.01)
            return current_context()

    results = await asyncio.gather(work("a"), work("b"), work("c"))
    assert [r["camera"] for r in results] == ["a", "b", "c"]
    assert current_context() == {}


def test_call_fields_override_bound_fields() -> None:
    """A field given at the call wins over the same bound field."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    with bind_context(camera="front"):
        get_logger("hsi.test").info("x", camera="override")
    (record,) = _json_lines(out)
    assert record["camera"] == "override"


def test_colliding_field_names_are_kept_apart() -> None:
    """A field named like a reserved JSON key is written as ctx_<name>, not over it."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    get_logger("hsi.test").info("x", level="high", message="user text", logger="mine")
    (record,) = _json_lines(out)
    assert record["level"] == "INFO"
    assert record["ctx_level"] == "high"
    assert record["ctx_message"] == "user text"
    assert record["ctx_logger"] == "mine"


def test_secrets_never_reach_the_console() -> None:
    """Secret-named fields and secrets inside values and messages are masked."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    log = get_logger("hsi.test")
    log.info(
        "service.connected",
        api_key="k-abcdef",
        url="postgresql://hsi:pg-hunter2@db:5432/hsi",
        headers={"Authorization": "Bearer tok-123", "Accept": "json"},
    )
    logging.getLogger("hsi.test").error("login with password=letmein failed")
    plain = io.StringIO()
    setup_logging(LoggingConfig(), stream=plain)
    log.info("service.connected", webhook_secret="whs-999", dsn="redis://:rd-pass@cache:6379/0")
    text_out = out.getvalue() + plain.getvalue()
    for secret in ("k-abcdef", "pg-hunter2", "tok-123", "letmein", "whs-999", "rd-pass"):
        assert secret not in text_out
    first = _json_lines(out)[0]
    assert first["api_key"] == "***"
    assert first["url"] == "postgresql://hsi:***@db:5432/hsi"
    assert first["headers"] == {"Authorization": "***", "Accept": "json"}


def test_exceptions_are_logged_with_traceback() -> None:
    """`exception()` attaches the traceback, as text in plain and as a field in JSON."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    log = get_logger("hsi.test")
    try:
        raise ValueError("token=abc123 rejected")
    except ValueError:
        log.exception("stage.failed", stage="detect")
    (record,) = _json_lines(out)
    assert record["level"] == "ERROR"
    assert "Traceback" in str(record["exception"])
    assert "ValueError: token=*** rejected" in str(record["exception"])


def test_log_event_helper_works_on_plain_loggers() -> None:
    """`log_event()` gives a standard logger the same event-with-fields records."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    log_event(logging.getLogger("hsi.test"), "batch.closed", level=logging.WARNING, size=7)
    log_event(get_logger("hsi.test"), "batch.opened", camera="front")
    closed, opened = _json_lines(out)
    assert (closed["event"], closed["level"], closed["size"]) == ("batch.closed", "WARNING", 7)
    assert (opened["event"], opened["camera"]) == ("batch.opened", "front")


def test_standard_logger_extra_fields_are_structured() -> None:
    """`extra=` fields of a plain logger call (code that cannot import hsi) become fields, and a
    dotted lowercase message without arguments counts as the event name."""
    out = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=out)
    std = logging.getLogger("streams.test")
    with bind_context(stage="detect"):
        std.info("file.observed", extra={"camera": "front", "request_id": "r-9"})
        std.info("Loaded %d models", 2)
        std.info("Plain sentence.")
    observed, loaded, sentence = _json_lines(out)
    assert observed["event"] == "file.observed"
    assert (observed["camera"], observed["stage"], observed["request_id"]) == (
        "front",
        "detect",
        "r-9",
    )
    assert "event" not in loaded
    assert loaded["message"] == "Loaded 2 models"
    assert "event" not in sentence


def test_records_below_the_level_are_not_written() -> None:
    """The configured level filters records."""
    out = io.StringIO()
    setup_logging(LoggingConfig(level="WARNING"), stream=out)
    log = get_logger("hsi.test")
    log.info("quiet")
    log.warning("loud")
    assert [line.split()[3] for line in _lines(out)] == ["loud"]


def test_setup_twice_does_not_duplicate_lines() -> None:
    """A second setup with the same configuration installs nothing more."""
    out = io.StringIO()
    config = LoggingConfig()
    setup_logging(config, stream=out)
    handlers = list(logging.getLogger().handlers)
    setup_logging(config, stream=out)
    setup_logging(LoggingConfig(), stream=out)
    assert logging.getLogger().handlers == handlers
    get_logger("hsi.test").warning("once")
    assert len(_lines(out)) == 1


def test_setup_with_another_config_replaces_the_handlers() -> None:
    """Changing the configuration swaps HSI's handlers instead of adding to them."""
    first, second = io.StringIO(), io.StringIO()
    setup_logging(LoggingConfig(), stream=first)
    setup_logging(LoggingConfig(format="json"), stream=second)
    get_logger("hsi.test").warning("after")
    assert first.getvalue() == ""
    assert _json_lines(second)[0]["event"] == "after"


def test_reset_logging_removes_handlers_and_restores_level() -> None:
    """After reset only the handlers that were there before remain, at the old level."""
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    setup_logging(LoggingConfig(level="DEBUG"), stream=io.StringIO())
    assert len(root.handlers) == len(before_handlers) + 1
    assert root.level == logging.DEBUG
    reset_logging()
    assert root.handlers == before_handlers
    assert root.level == before_level


def test_default_console_writes_to_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream argument records go to sys.stderr."""
    setup_logging(LoggingConfig())
    get_logger("hsi.test").warning("to.stderr", camera="front")
    err = capsys.readouterr().err
    assert "to.stderr camera=front" in err


def test_file_handler_rotates_at_the_size(tmp_path: Path) -> None:
    """The log file rotates at `file_max_bytes` and keeps `file_backup_count` old files."""
    path = tmp_path / "logs" / "hsi.log"
    config = LoggingConfig(file=path, file_max_bytes=2048, file_backup_count=2)
    setup_logging(config, stream=io.StringIO())
    log = get_logger("hsi.test")
    for i in range(200):
        log.warning("file.line", n=i, padding="x" * 40)
    reset_logging()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["hsi.log", "hsi.log.1", "hsi.log.2"]
    for name in files:
        assert (path.parent / name).stat().st_size <= 2048
    assert "n=199" in path.read_text(encoding="utf-8")


def test_config_from_settings() -> None:
    """Settings map onto the config; the database URL is used only when LOG_DB_ENABLED."""
    settings = Settings(
        _env_file=None,
        log_level="DEBUG",
        log_format="json",
        log_file=Path("hsi.log"),
        log_db_enabled=True,
        log_db_min_level="ERROR",
        database_url="postgresql://u:p@db/hsi",
        otel_service_name="hsi-x",
    )
    config = components.logging_config(settings)
    assert config.level == "DEBUG"
    assert config.format == "json"
    assert config.file == Path("hsi.log")
    assert config.db_url == "postgresql+psycopg://u:p@db/hsi"
    assert config.db_min_level == "ERROR"
    assert config.service_name == "hsi-x"
    embedded = components.logging_config(settings, db_url="postgresql+psycopg://e@h:1/x")
    assert embedded.db_url == "postgresql+psycopg://e@h:1/x"
    disabled = Settings(_env_file=None, database_url="postgresql://u:p@db/hsi")
    assert components.logging_config(disabled, db_url="postgresql://x/y").db_url is None


# --- sanitize_error -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "cannot connect to postgresql://hsi:s3cr3t@db:5432/hsi",
            "cannot connect to postgresql://hsi:***@db:5432/hsi",
        ),
        (
            "postgresql+psycopg://user:p@ss@localhost/db down",
            "postgresql+psycopg://user:***@localhost/db down",
        ),
        ("redis://:hunter2@cache:6379/0 refused", "redis://:***@cache:6379/0 refused"),
        ("rediss://default:pw@cache:6380", "rediss://default:***@cache:6380"),
        ("host=db port=5432 password=hunter2 user=hsi", "host=db port=5432 password=*** user=hsi"),
        ('password="two words" next', 'password="***" next'),
        ("PGPASSWORD='abc' psql", "PGPASSWORD='***' psql"),
        ("pwd=abc;secret=xyz", "pwd=***;secret=***"),
        ("token: abc123, retry", "token: ***, retry"),
        ("smtp_password = mail-pw", "smtp_password = ***"),
        ("api_key=K1 apikey=K2 api-key:K3", "api_key=*** apikey=*** api-key:***"),
        ('{"api_key": "k-1", "count": 3}', '{"api_key": "***", "count": 3}'),
        ("X-API-Key: abcdef other", "X-API-Key: *** other"),
        ("https://x.example/cb?token=abc&page=2", "https://x.example/cb?token=***&page=2"),
        ("Authorization: Basic dXNlcjpwdw== sent", "Authorization: Basic *** sent"),
        ("Authorization: Bearer eyJhbGci.x.y", "Authorization: Bearer ***"),
        ("header bearer eyJhbGciOi.abc.def rejected", "header bearer *** rejected"),
        ("key sk-abcdefghijklmnopqrstuvwx invalid", "key sk-*** invalid"),
        ("key sk-proj-ABCDEFGHIJKLMNOP_1234 invalid", "key sk-*** invalid"),
        ("token_count=5 tokens=3 passive=1", "token_count=5 tokens=3 passive=1"),
        ("no secrets here: 3 files", "no secrets here: 3 files"),
        ("open /home/alice/hsi/data/cams/front/a.jpg failed", "open …/front/a.jpg failed"),
        ('File "/usr/lib/python3.11/site.py", line 3', 'File "…/python3.11/site.py", line 3'),
        ("short /tmp/x and /a/b stay", "short /tmp/x and /a/b stay"),
        ("see http://host/a/b/c/d", "see http://host/a/b/c/d"),
        (r"C:\Users\alice\cams\front\a.jpg missing", r"…\front\a.jpg missing"),
        ("nul\x00byte", "nulbyte"),
    ],
)
def test_sanitize_error_masks_secrets_and_keeps_the_rest(raw: str, expected: str) -> None:
    """Each secret form is masked, paths shortened, and the non-secret text left as it was."""
    assert sanitize_error(raw) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad password=abc"), "ValueError: bad password=***"),
        (KeyError("camera"), "KeyError: 'camera'"),
        (TimeoutError(), "TimeoutError"),
        (
            ConnectionError("redis://:pw@cache:6379 refused"),
            "ConnectionError: redis://:***@cache:6379 refused",
        ),
    ],
)
def test_sanitize_error_describes_exceptions(error: BaseException, expected: str) -> None:
    """Exceptions become `TypeName: message`, sanitized."""
    assert sanitize_error(error) == expected


@pytest.mark.parametrize("max_length", [20, 100, 500])
def test_sanitize_error_truncates_with_a_marker(max_length: int) -> None:
    """Long text is cut to max_length with a visible marker; short text is untouched."""
    long_text = "error " + "x" * 1000
    result = sanitize_error(long_text, max_length=max_length)
    assert len(result) == max_length
    assert result.endswith("…[truncated]")
    assert result.startswith("error ")
    assert sanitize_error("short", max_length=max_length) == "short"


def test_truncation_happens_after_masking() -> None:
    """A secret cut by the length limit is still masked, not half shown."""
    result = sanitize_error("x" * 30 + " password=supersecretvalue", max_length=50)
    assert "supersecret" not in result
    assert "password=***" in result


def test_mask_secrets_keeps_paths() -> None:
    """mask_secrets only masks; paths and length stay as they were."""
    raw = "/home/alice/data/cams/front/a.jpg token=abc " + "y" * 600
    assert mask_secrets(raw) == raw.replace("token=abc", "token=***")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("pa\u017fsword=hunter2", "pa\u017fsword=***"),  # long s: a match of `s` ignoring case
        ("AUTHOR\u0130ZATION: Bearer abc", "AUTHOR\u0130ZATION: Bearer ***"),
        ("x-ap\u0131-key: q", "x-ap\u0131-key: ***"),
        ("API_\u212aEY=zz", "API_\u212aEY=***"),  # the Kelvin sign
        ('GET /api/live?api_key=abc HTTP/1.1" 200', 'GET /api/live?api_key=*** HTTP/1.1" 200'),
        (
            'GET /api/events?cursor=eyJ2IjoxfQ HTTP/1.1" 200',
            'GET /api/events?cursor=eyJ2IjoxfQ HTTP/1.1" 200',
        ),
    ],
)
def test_mask_secrets_looks_for_every_case_of_its_words(raw: str, expected: str) -> None:
    """The quick look for the patterns' words before the patterns run misses none that the
    patterns (ignoring case as `re` does) would match."""
    assert mask_secrets(raw) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("postgres://u@h/db?sslmode=disable", "postgresql://u@h/db?sslmode=disable"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("host=h dbname=db", "host=h dbname=db"),
    ],
)
def test_libpq_conninfo_converts_sqlalchemy_urls(url: str, expected: str) -> None:
    """SQLAlchemy driver URLs become libpq URIs; key=value strings pass through."""
    assert libpq_conninfo(url) == expected


def test_libpq_conninfo_refuses_other_schemes() -> None:
    """A non-PostgreSQL URL is an error that does not echo its password."""
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as caught:
        libpq_conninfo("mysql://u:secretpw@h/db")
    assert "secretpw" not in str(caught.value)


# --- PostgreSQL handler -------------------------------------------------------------------------


async def _rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(text(sql))]


async def test_postgres_handler_writes_batches_with_context(
    database_url: str, db_schema: str, db_engine: AsyncEngine
) -> None:
    """Records land in `logs` in batches, with context, ids and sanitized text."""
    await migrate(db_engine)
    handler = PostgresLogHandler(
        database_url, level=logging.DEBUG, schema=db_schema, batch_size=50, flush_interval=30
    )
    logger = logging.getLogger("hsi.test.pgsink")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    log = get_logger("hsi.test.pgsink")
    tracer = TracerProvider().get_tracer("test")
    try:
        with bind_context(camera="front", request_id="req-7"):
            for i in range(118):
                log.info("file.observed", n=i, path="/cams/front/a.jpg", api_key="k-1")
            with tracer.start_as_current_span("store") as span:
                logger.error("connect postgresql://hsi:pg-pass@db/hsi failed")
            try:
                raise RuntimeError("redis://:rd-pass@cache:6379 down")
            except RuntimeError:
                log.exception("stage.failed", stage="detect")
        assert await asyncio.to_thread(handler.drain, 20)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    assert handler.written == 120
    assert handler.dropped == 0
    rows = await _rows(
        db_engine,
        "SELECT level, logger, message, context, request_id, trace_id, exception "
        "FROM logs ORDER BY id",
    )
    assert len(rows) == 120
    level, name, message, context, request_id, trace_id, exception = rows[0]
    assert (level, name, message, request_id, trace_id, exception) == (
        "INFO", "hsi.test.pgsink", "file.observed", "req-7", None, None
    )  # fmt: skip
    assert context == {"n": 0, "path": "/cams/front/a.jpg", "api_key": "***", "camera": "front"}
    error = rows[118]
    assert error[2] == "connect postgresql://hsi:***@db/hsi failed"
    assert error[5] == format(span.get_span_context().trace_id, "032x")
    failed = rows[119]
    assert failed[2] == "stage.failed"
    assert "RuntimeError: redis://:***@cache:6379 down" in str(failed[6])
    assert "rd-pass" not in str(failed[6])
    # 50 + 50 by batch size, the last 20 by drain(): three COPY transactions, not 120.
    (batches,) = await _rows(db_engine, "SELECT count(DISTINCT xmin::text) FROM logs")
    assert batches == (3,)


async def test_setup_logging_attaches_the_database_handler_at_its_level(
    database_url: str, db_schema: str, db_engine: AsyncEngine
) -> None:
    """With db_url set, records at or above db_min_level go to the database too."""
    await migrate(db_engine)
    out = io.StringIO()
    config = LoggingConfig(
        level="INFO", db_url=database_url, db_min_level="WARNING", db_schema=db_schema
    )
    setup_logging(config, stream=out)
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, PostgresLogHandler)]
    log = get_logger("hsi.test.setup")
    log.info("only.console")
    log.warning("both.places", camera="porch")
    assert await asyncio.to_thread(handler.drain, 20)
    reset_logging()
    assert not handler.alive
    rows = await _rows(db_engine, "SELECT message, context FROM logs")
    assert rows == [("both.places", {"camera": "porch"})]
    assert len(_lines(out)) == 2


async def test_postgres_handler_never_stores_driver_records(
    database_url: str, db_schema: str, db_engine: AsyncEngine, root_at_debug: None
) -> None:
    """Records of psycopg, SQLAlchemy and the writer thread are skipped, so no recursion."""
    await migrate(db_engine)
    handler = PostgresLogHandler(database_url, level=logging.DEBUG, schema=db_schema)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("psycopg").debug("driver chatter")
        logging.getLogger("psycopg.pool").warning("pool chatter")
        logging.getLogger("sqlalchemy.engine.Engine").warning("engine chatter")
        logging.getLogger("hsi.test.app").warning("app.record")
        # The writer's own connect makes psycopg log at DEBUG on the writer thread.
        assert await asyncio.to_thread(handler.drain, 20)
    finally:
        root.removeHandler(handler)
        handler.close()
    rows = await _rows(db_engine, "SELECT logger, message FROM logs")
    assert rows == [("hsi.test.app", "app.record")]
    assert handler.skipped >= 4
    assert handler.written == 1


class _FailedConnects(logging.Handler):
    """Counts the failed connection attempts psycopg reports from the log writer's thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == "hsi-log-writer" and "failed" in record.getMessage():
            self.count += 1


async def test_postgres_handler_degrades_quietly_while_database_is_down(
    root_at_debug: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """With PostgreSQL unreachable emit() neither raises nor grows memory; drops are counted
    and, over several reconnect attempts, one masked warning goes to stderr."""
    handler = PostgresLogHandler(
        DOWN_URL,
        level=logging.DEBUG,
        queue_size=100,
        max_backlog=100,
        batch_size=10,
        flush_interval=0.02,
        retry_initial=0.02,
        retry_max=0.1,
    )
    root = logging.getLogger()
    root.addHandler(handler)
    attempts = _FailedConnects()
    driver = logging.getLogger("psycopg")
    driver.addHandler(attempts)
    log = get_logger("hsi.test.down")
    try:
        for i in range(1000):
            log.warning("still.running", n=i)
            assert handler.pending <= 200
        await wait_until(lambda: handler.dropped >= 800, "the full queue to drop records")
        # Several reconnect attempts, each logged by psycopg (and skipped by the handler).
        await wait_until(lambda: attempts.count >= 3, "three failed reconnect attempts")
        assert handler.dropped >= 800
        assert handler.written == 0
        assert handler.pending <= 200
        assert handler.skipped > 0  # psycopg's records from the writer thread
        assert handler.alive
        assert not await asyncio.to_thread(handler.drain, 1)
    finally:
        driver.removeHandler(attempts)
        root.removeHandler(handler)
        handler.close(timeout=5)
    assert not handler.alive
    assert handler.dropped == 1000
    err = capsys.readouterr().err
    assert err.count("cannot be written to PostgreSQL") == 1
    assert "db-secret-pw" not in err


async def test_a_refused_record_does_not_lose_its_batch(
    database_url: str, db_schema: str, db_engine: AsyncEngine
) -> None:
    """When PostgreSQL refuses one row the others of its batch are still stored."""
    await migrate(db_engine)
    async with db_engine.begin() as conn:
        await conn.execute(
            text("ALTER TABLE logs ADD CONSTRAINT no_poison CHECK (message <> 'poison')")
        )
    handler = PostgresLogHandler(
        database_url, level=logging.DEBUG, schema=db_schema, flush_interval=30
    )
    logger = logging.getLogger("hsi.test.poison")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for message in ("first", "poison", "last"):
            logger.warning(message)
        assert await asyncio.to_thread(handler.drain, 20)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    rows = await _rows(db_engine, "SELECT message FROM logs ORDER BY id")
    assert rows == [("first",), ("last",)]
    assert (handler.written, handler.dropped) == (2, 1)


async def test_records_wait_for_the_logs_table(
    database_url: str, db_schema: str, db_engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records logged before the migrations ran are kept and written once the table exists."""
    handler = PostgresLogHandler(
        database_url,
        level=logging.DEBUG,
        schema=db_schema,
        flush_interval=0.02,
        retry_initial=0.02,
        retry_max=0.05,
    )
    logger = logging.getLogger("hsi.test.early")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("before migrations")
        assert not await asyncio.to_thread(handler.drain, 5)
        await migrate(db_engine)
        for _ in range(200):
            if handler.written:
                break
            await asyncio.sleep(0.02)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    rows = await _rows(db_engine, "SELECT message FROM logs")
    assert rows == [("before migrations",)]
    err = capsys.readouterr().err
    assert err.count("cannot be written to PostgreSQL") == 1
    assert "reach PostgreSQL again (0 dropped meanwhile)" in err


async def test_close_stops_the_thread_after_writing(
    database_url: str, db_schema: str, db_engine: AsyncEngine
) -> None:
    """close() writes what is queued, stops the thread; later records are counted as dropped."""
    await migrate(db_engine)
    handler = PostgresLogHandler(
        database_url, level=logging.DEBUG, schema=db_schema, flush_interval=30
    )
    logger = logging.getLogger("hsi.test.close")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        for i in range(5):
            logger.info("queued %d", i)
        await asyncio.to_thread(handler.close)
        assert not handler.alive
        logger.info("after close")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert handler.dropped == 1
    rows = await _rows(db_engine, "SELECT message FROM logs ORDER BY id")
    assert rows == [(f"queued {i}",) for i in range(5)]


def test_postgres_handler_refuses_unsafe_schema_names() -> None:
    """The schema goes into a libpq option, so only plain identifiers are accepted."""
    with pytest.raises(ValueError, match="plain identifier"):
        PostgresLogHandler(DOWN_URL, schema="x -c statement_timeout=1")


def test_failed_setup_keeps_the_working_handlers(tmp_path: Path) -> None:
    """A configuration that cannot be built raises and leaves the previous setup in place."""
    out = io.StringIO()
    setup_logging(LoggingConfig(), stream=out)
    handlers = list(logging.getLogger().handlers)
    bad = LoggingConfig(file=tmp_path / "hsi.log", db_url=DOWN_URL, db_schema="no such schema")
    with pytest.raises(ValueError, match="plain identifier"):
        setup_logging(bad, stream=io.StringIO())
    assert logging.getLogger().handlers == handlers
    get_logger("hsi.test").warning("still.here")
    assert "still.here" in out.getvalue()
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging(LoggingConfig(level="LOUD"), stream=io.StringIO())

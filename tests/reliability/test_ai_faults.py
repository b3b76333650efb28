"""The AI services failing under the detect and analyze stages, on a real Redis.

The RT-DETR detector and the OpenAI-compatible LLM are fakes speaking the real contract over HTTP
on loopback; they go down (nothing listens), get slow, flap, answer 500, garbage or 50 MB. Every
entry ends exactly once as a fact (`detection.*`, `analysis.*`) or as a dead letter, nothing stays
pending, the circuit breakers stop the calls and let a probe through once the service is back, and
`hsi dlq retry` brings the dead letters back to be processed once (PostgreSQL holds their
projection, which the command removes).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hsi.app.pipeline import Pipeline, PipelineOptions
from hsi.cli import main
from hsi.infra.db import migrate
from hsi.settings.model import Settings, get_settings
from streams.analyzers import AnalyzerResponseError
from streams.analyzers.llm import LLMAnalyzer, LLMConfig
from streams.contract import HandlerResult, StreamEntry
from streams.detectors import DetectorProtocolError, RtDetrDetector
from streams.dlq import list_dead, retry_dead
from streams.envelope import HEADER_RETRY_OF, entry_fields, read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.reclaim import ReclaimConfig, Reclaimer, ReclaimStats
from streams.resilience import CircuitState
from streams.schemas import (
    AnalysisCompleted,
    AnalysisFailed,
    BatchClosed,
    BatchDetection,
    Box,
    DetectedObject,
    DetectionCompleted,
    DetectionFailed,
    EntryDead,
    FileObserved,
)
from streams.stages.analyze import AnalyzeStage, summarize
from streams.stages.detect import DetectStage
from tests.conftest import PHOTOS
from tests.fakes.llm import FakeLLM, serve_fake_llm
from tests.fakes.rtdetr import FakeRtDetr, serve_fake_rtdetr
from tests.fakes.server import free_port
from tests.projections.support import project_all, stage_for

CAMERA = "front_door"
FOLDER = "Front Door"
TIMEOUT = 20.0
CAP = 1024 * 1024  # the clients' answer cap in these tests
HUGE = 50 * 1024 * 1024
IDLE_MS = 40  # reclaim idle time of the drain-mode lanes
T0 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


class ManualClock:
    """Monotonic seconds that move only when the test says so (for the circuit breakers)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the two stages in drain mode -------------------------------------------------------------


@dataclass
class Lane:
    """One stage's consumer group on the camera's input stream, in drain mode: a consumer that
    reads fresh entries as the stage runner does (errors go to the reclaimer, as the pipeline
    passes them), and the group's reclaimer, run round by round."""

    redis: Redis
    stream: str
    group: str
    handler: Callable[[str, list[StreamEntry]], Awaitable[HandlerResult]]
    reclaimer: Reclaimer
    consumer: str = "host-1-worker"

    async def deliver(self) -> HandlerResult:
        """Read the new entries once and hand them to the stage."""
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=100
        )
        if not reply:
            return HandlerResult()
        entries = [(entry_id.decode(), fields) for entry_id, fields in reply[0][1]]
        try:
            result = await self.handler(self.stream, entries)
        except Exception as exc:  # the stage runner logs it and leaves the batch pending
            return HandlerResult(failed={entry_id: repr(exc) for entry_id, _ in entries})
        self.reclaimer.record_failures(self.stream, result.failed)
        return result

    async def settle(self, seconds: float = TIMEOUT) -> ReclaimStats:
        """Reclaim round after round until nothing is pending: every entry done or buried."""
        total = ReclaimStats()
        async with asyncio.timeout(seconds):
            while await self.pending():
                await asyncio.sleep(IDLE_MS / 1000 * 1.5)
                total += await self.reclaimer.run_once()
        return total

    async def pending(self) -> int:
        summary: Any = await self.redis.xpending(self.stream, self.group)
        return int(summary["pending"])


async def _lane(
    redis: Redis,
    names: StreamNames,
    stream: str,
    group: Group,
    handler: Callable[[str, list[StreamEntry]], Awaitable[HandlerResult]],
    max_deliveries: int,
) -> Lane:
    await ensure_group(redis, stream, group.value)
    reclaimer = Reclaimer(
        redis,
        names,
        group=group.value,
        streams=[stream],
        config=ReclaimConfig(idle_ms=IDLE_MS, max_deliveries=max_deliveries),
        consumer=f"host-1-reclaim-{group.value}",
        handler=handler,
    )
    return Lane(redis, stream, group.value, handler, reclaimer)


# --- entries ------------------------------------------------------------------------------------


async def _publish_files(redis: Redis, names: StreamNames, root: Path, count: int) -> list[str]:
    """`count` photos in the camera's folder, each announced as a `file.observed`."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for n in range(count):
        target = folder / f"MDAlarm_20260301-2330{n:02d}.jpg"
        shutil.copy(PHOTOS / "person-astronaut.jpg", target)
        data = target.read_bytes()
        entry = FileObserved(
            camera_id=CAMERA,
            path=f"{FOLDER}/{target.name}",
            sha256=hashlib.sha256(data + bytes([n])).hexdigest(),
            size=len(data),
            mime="image/jpeg",
            media_kind="image",
            captured_at=T0 + timedelta(seconds=n),
            capture_source="filename",
            observed_at=T0 + timedelta(seconds=n),
        )
        entry_id: Any = await redis.xadd(
            names.files(CAMERA), {k: v for k, v in entry_fields(entry).items()}
        )
        ids.append(entry_id.decode())
    await redis.sadd(names.camera_set, CAMERA)
    return ids


def _batch(n: int) -> BatchClosed:
    person = DetectedObject(label="person", confidence=0.9, bbox=Box(x=1, y=2, width=30, height=60))
    captured = T0 + timedelta(minutes=n)
    return BatchClosed(
        camera_id=CAMERA,
        batch_id=f"batch-{n}",
        detections=(
            BatchDetection(
                entry_id=f"{n + 1}-0",
                file_entry_id=f"{n + 1}-1",
                path=f"{FOLDER}/MDAlarm_{n}.jpg",
                captured_at=captured,
                objects=(person,),
            ),
        ),
        window_start=captured,
        window_end=captured + timedelta(seconds=5),
        close_reason="idle",
        detection_count=1,
        object_types=("person",),
        max_confidence=0.9,
        fast_path=False,
        closed_at=captured + timedelta(seconds=35),
    )


async def _publish_batches(redis: Redis, names: StreamNames, count: int) -> list[str]:
    ids = []
    for n in range(count):
        entry_id: Any = await redis.xadd(
            names.batches(CAMERA), {k: v for k, v in entry_fields(_batch(n)).items()}
        )
        ids.append(entry_id.decode())
    await redis.sadd(names.camera_set, CAMERA)
    return ids


# --- accounting ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Where every entry of an input stream ended, read back from Redis."""

    inputs: list[str]
    retry_of: dict[str, str]  # a re-published copy → the entry it replaces
    outputs: Counter[str]  # input entry id → output facts naming it
    output_types: dict[str, list[str]]  # input entry id → the types of those facts
    errors: dict[str, str]  # input entry id → the error of its failure fact
    dead: Counter[str]  # input entry id → dead letters naming it
    last_errors: dict[str, str]  # input entry id → its dead letter's last error
    pending: int
    lag: int
    retried: set[str] = field(default_factory=set)

    def fates(self, entry_id: str) -> int:
        """Facts, dead letters and re-publications that account for one input entry."""
        return self.outputs[entry_id] + self.dead[entry_id] + (entry_id in self.retried)

    @property
    def lost(self) -> list[str]:
        return [entry_id for entry_id in self.inputs if self.fates(entry_id) == 0]

    @property
    def duplicated(self) -> list[str]:
        return [entry_id for entry_id in self.inputs if self.fates(entry_id) > 1]

    def kinds(self) -> Counter[str]:
        return Counter(kind for kinds in self.output_types.values() for kind in kinds)

    def summary(self) -> dict[str, int]:
        return {
            "inputs": len(self.inputs),
            "facts": sum(self.outputs.values()),
            "dead": sum(self.dead.values()),
            "retried": len(self.retried),
            "pending": self.pending,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
        }

    def assert_accounted(self) -> None:
        """lost = 0, duplicated = 0, nothing pending, nothing unread (figures printed)."""
        print("accounted:", " ".join(f"{k}={v}" for k, v in self.summary().items()))
        assert (self.lost, self.duplicated, self.pending, self.lag) == ([], [], 0, 0), self


async def _tally(redis: Redis, names: StreamNames, source: str, target: str, group: Group) -> Tally:
    inputs: list[str] = []
    retry_of: dict[str, str] = {}
    rows: Any = await redis.xrange(source)
    for raw_id, fields in rows:
        entry_id = raw_id.decode()
        inputs.append(entry_id)
        _, headers = read_fields(fields)
        if HEADER_RETRY_OF in headers:
            retry_of[entry_id] = str(headers[HEADER_RETRY_OF])
    outputs: Counter[str] = Counter()
    output_types: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    rows = await redis.xrange(target)
    for _, fields in rows:
        fact, _ = read_fields(fields)
        if isinstance(fact, DetectionCompleted | DetectionFailed):
            source_id = fact.file_entry_id
        else:
            assert isinstance(fact, AnalysisCompleted | AnalysisFailed), fact
            source_id = fact.batch_entry_id
        outputs[source_id] += 1
        output_types.setdefault(source_id, []).append(fact.type)
        if isinstance(fact, DetectionFailed | AnalysisFailed):
            errors[source_id] = fact.error
    dead: Counter[str] = Counter()
    last_errors: dict[str, str] = {}
    rows = await redis.xrange(names.dead(CAMERA))
    for _, fields in rows:
        letter, _ = read_fields(fields)
        assert isinstance(letter, EntryDead)
        if letter.source_stream == source:
            dead[letter.entry_id] += 1
            last_errors[letter.entry_id] = letter.last_error
    pending, lag = 0, 0
    for info in await redis.xinfo_groups(source):
        if info["name"].decode() == group.value:
            pending, lag = int(info["pending"]), int(info.get("lag") or 0)
    return Tally(
        inputs=inputs,
        retry_of=retry_of,
        outputs=outputs,
        output_types=output_types,
        errors=errors,
        dead=dead,
        last_errors=last_errors,
        pending=pending,
        lag=lag,
        retried=set(retry_of.values()),
    )


async def _retry_all(redis: Redis, names: StreamNames) -> dict[str, str]:
    """`hsi dlq retry` (its function) for every dead letter of the camera: new id → original."""
    copies = {}
    for letter in await list_dead(redis, names, [CAMERA], 1000):
        copies[await retry_dead(redis, names, CAMERA, letter.dead_id)] = letter.entry_id
    return copies


def _record(scenario: str, **figures: object) -> None:
    """Print a scenario's figures (shown with `pytest -s`)."""
    print(scenario, " ".join(f"{k}={v}" for k, v in figures.items()))


def _assert_recovered(
    tally: Tally, originals: list[str], copies: dict[str, str], kind: str
) -> None:
    """Each original was re-published once, and each copy yielded exactly one `kind` fact."""
    assert sorted(copies.values()) == sorted(originals)
    assert tally.retry_of == copies
    for copy in copies:
        assert tally.output_types.get(copy) == [kind], (copy, tally)
    for original in originals:
        assert (tally.outputs[original], tally.dead[original]) == (0, 0)
    assert not tally.dead
    tally.assert_accounted()


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtdetr_service() -> Iterator[tuple[FakeRtDetr, str]]:
    with serve_fake_rtdetr() as running:
        yield running


@pytest.fixture(scope="module")
def llm_service() -> Iterator[tuple[FakeLLM, str]]:
    with serve_fake_llm() as running:
        yield running


@pytest.fixture
def fake_rtdetr(rtdetr_service: tuple[FakeRtDetr, str]) -> FakeRtDetr:
    """The fake RT-DETR service, answering normally with zeroed counters."""
    rtdetr_service[0].reset()
    return rtdetr_service[0]


@pytest.fixture
def fake_llm(llm_service: tuple[FakeLLM, str]) -> FakeLLM:
    """The fake LLM, answering a valid assessment with zeroed counters."""
    llm_service[0].reset()
    return llm_service[0]


@pytest.fixture
def names(key_prefix: str) -> StreamNames:
    return StreamNames(key_prefix)


@pytest.fixture
def camera_root(tmp_path: Path) -> Path:
    return tmp_path / "cameras"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def closing() -> AsyncIterator[list[RtDetrDetector | LLMAnalyzer]]:
    """Clients made by a test, closed after it."""
    made: list[RtDetrDetector | LLMAnalyzer] = []
    yield made
    for client in made:
        await client.aclose()


MakeDetector = Callable[..., RtDetrDetector]
MakeAnalyzer = Callable[..., LLMAnalyzer]


@pytest.fixture
def make_detector(
    rtdetr_service: tuple[FakeRtDetr, str],
    clock: ManualClock,
    closing: list[RtDetrDetector | LLMAnalyzer],
) -> MakeDetector:
    """An RT-DETR client with short timeouts and backoff, overridable per test."""

    def make(**overrides: Any) -> RtDetrDetector:
        settings: dict[str, Any] = {
            "connect_timeout": 0.5,
            "read_timeout": 2.0,
            "max_retries": 1,
            "backoff_base": 0.005,
            "backoff_cap": 0.01,
            "circuit_failure_threshold": 1000,
            "circuit_reset_seconds": 30.0,
            "confidence_threshold": 0.3,
            "max_response_bytes": CAP,
            "clock": clock,
        }
        settings.update(overrides)
        detector = RtDetrDetector(settings.pop("base_url", rtdetr_service[1]), **settings)
        closing.append(detector)
        return detector

    return make


@pytest.fixture
def make_analyzer(
    llm_service: tuple[FakeLLM, str],
    clock: ManualClock,
    closing: list[RtDetrDetector | LLMAnalyzer],
) -> MakeAnalyzer:
    """An LLM client with short timeouts and backoff, overridable per test."""

    def make(**overrides: Any) -> LLMAnalyzer:
        values: dict[str, Any] = {
            "base_url": llm_service[1],
            "model": "test-model",
            "connect_timeout_seconds": 0.5,
            "read_timeout_seconds": 2.0,
            "max_retries": 1,
            "retry_backoff_seconds": 0.005,
            "retry_backoff_cap_seconds": 0.01,
            "circuit_failure_threshold": 1000,
            "circuit_reset_seconds": 30.0,
            "max_response_bytes": CAP,
        }
        values.update(overrides)
        analyzer = LLMAnalyzer(LLMConfig(**values), clock=clock)
        closing.append(analyzer)
        return analyzer

    return make


async def _detect_lane(
    redis: Redis,
    names: StreamNames,
    detector: RtDetrDetector,
    root: Path,
    *,
    max_deliveries: int = 3,
    concurrency: int = 2,
) -> Lane:
    stage = DetectStage(
        redis=redis, names=names, detector=detector, camera_root=root, concurrency=concurrency
    )
    return await _lane(
        redis, names, names.files(CAMERA), Group.DETECT, stage.handle, max_deliveries
    )


async def _analyze_lane(
    redis: Redis, names: StreamNames, analyzer: LLMAnalyzer, *, max_deliveries: int = 3
) -> Lane:
    stage = AnalyzeStage(redis=redis, names=names, analyzer=analyzer, timezone="UTC")
    return await _lane(
        redis, names, names.batches(CAMERA), Group.ANALYZE, stage.handle, max_deliveries
    )


async def _detections(redis: Redis, names: StreamNames) -> Tally:
    return await _tally(redis, names, names.files(CAMERA), names.detections(CAMERA), Group.DETECT)


async def _analyses(redis: Redis, names: StreamNames) -> Tally:
    return await _tally(redis, names, names.batches(CAMERA), names.analyses(CAMERA), Group.ANALYZE)


# --- faults of the detector ---------------------------------------------------------------------

# A timeout costs its whole wait: the slow cases make one attempt per delivery (max_retries=0),
# the others two (max_retries=1), of which only connect errors, timeouts and 5xx use the second.
SLOW_ANSWER = 1.0
SLOW_READ_TIMEOUT = 0.4  # also the recovered service's time to answer, hence not shorter

# name → (how the fake misbehaves, requests per delivery, text of the dead letters' last error)
DETECTOR_FAULTS: dict[str, tuple[Callable[[FakeRtDetr], None], int, str]] = {
    "slow": (lambda fake: fake.answer_slowly(SLOW_ANSWER), 1, "timed out"),
    "http-500": (lambda fake: fake.fail_times(10_000), 2, "HTTP 500"),
    "html": (
        lambda fake: fake.answer_garbage(b"<html><h1>502 Bad Gateway</h1></html>", "text/html"),
        1,
        "invalid answer",
    ),
    "truncated-json": (
        lambda fake: fake.answer_garbage(b'{"detections": [{"class": "person", "confid'),
        1,
        "invalid answer",
    ),
    "wrong-shape": (
        lambda fake: fake.answer_garbage(b'{"objects": [{"label": "person"}], "size": [1, 1]}'),
        1,
        "invalid answer",
    ),
    "deeply-nested": (lambda fake: fake.answer_garbage(b"[" * 100_000), 1, "invalid answer"),
    "huge-declared": (lambda fake: fake.answer_huge(HUGE), 1, "too large"),
    "huge-chunked": (lambda fake: fake.answer_huge(HUGE, declare_length=False), 1, "too large"),
}


@pytest.mark.parametrize("fault", sorted(DETECTOR_FAULTS))
async def test_detector_fault_ends_in_dead_letters_that_retry_recovers(
    fault: str,
    fake_rtdetr: FakeRtDetr,
    make_detector: MakeDetector,
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
) -> None:
    """3 files under a misbehaving detector: 3 dead letters with a clear error, no detection,
    nothing pending; once it answers again, each retried file is detected exactly once."""
    misbehave, attempts, error = DETECTOR_FAULTS[fault]
    misbehave(fake_rtdetr)
    slow = {"read_timeout": SLOW_READ_TIMEOUT, "max_retries": 0} if fault == "slow" else {}
    detector = make_detector(**slow)
    lane = await _detect_lane(redis_client, names, detector, camera_root)
    originals = await _publish_files(redis_client, names, camera_root, 3)
    assert len((await lane.deliver()).failed) == 3
    stats = await lane.settle()
    assert stats.dead == 3
    tally = await _detections(redis_client, names)
    tally.assert_accounted()
    assert tally.dead == Counter(dict.fromkeys(originals, 1))
    assert not tally.outputs
    assert all(error in last for last in tally.last_errors.values()), tally.last_errors
    assert fake_rtdetr.requests == 3 * 3 * attempts  # files x deliveries x attempts
    _record(f"detector {fault}:", requests=fake_rtdetr.requests, sent=fake_rtdetr.bytes_sent)
    if fault.startswith("huge"):
        # each answer was dropped at the cap: the service never got to send most of it
        assert fake_rtdetr.bytes_sent < fake_rtdetr.requests * HUGE / 4, fake_rtdetr.bytes_sent
    fake_rtdetr.reset()
    copies = await _retry_all(redis_client, names)
    await lane.deliver()
    await lane.settle()
    assert fake_rtdetr.requests == 3
    recovered = await _detections(redis_client, names)
    _assert_recovered(recovered, originals, copies, "detection.completed")
    _record(f"detector {fault} retried:", requests=fake_rtdetr.requests)


async def test_detector_down_ends_in_dead_letters_until_it_is_back(
    make_detector: MakeDetector, redis_client: Redis, names: StreamNames, camera_root: Path
) -> None:
    """Connection refused: 3 dead letters naming the refused connection; once a service listens
    on that port again, each retried file is detected exactly once."""
    port = free_port()
    detector = make_detector(base_url=f"http://127.0.0.1:{port}")
    lane = await _detect_lane(redis_client, names, detector, camera_root)
    originals = await _publish_files(redis_client, names, camera_root, 3)
    await lane.deliver()
    assert (await lane.settle()).dead == 3
    tally = await _detections(redis_client, names)
    tally.assert_accounted()
    assert sorted(tally.dead) == sorted(originals)
    assert all("cannot connect" in last for last in tally.last_errors.values())
    assert detector.breaker.consecutive_failures == 3 * 3 * 2
    with serve_fake_rtdetr(port=port) as (back, _):
        copies = await _retry_all(redis_client, names)
        await lane.deliver()
        await lane.settle()
        assert back.requests == 3
    _assert_recovered(
        await _detections(redis_client, names), originals, copies, "detection.completed"
    )


@pytest.mark.parametrize("max_retries", [0, 1])
async def test_flapping_detector_loses_and_duplicates_nothing(
    max_retries: int,
    fake_rtdetr: FakeRtDetr,
    make_detector: MakeDetector,
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
) -> None:
    """Every other request fails: 6 files (one at a time), 6 detections, 12 requests, no dead
    letter; one retry absorbs every failure, and the circuit (threshold 3) never opens because
    each success resets the count."""
    fake_rtdetr.flap(500)
    detector = make_detector(max_retries=max_retries, circuit_failure_threshold=3)
    lane = await _detect_lane(
        redis_client, names, detector, camera_root, max_deliveries=10, concurrency=1
    )
    await _publish_files(redis_client, names, camera_root, 6)
    first = await lane.deliver()
    assert len(first.failed) == (3 if max_retries == 0 else 0)
    stats = await lane.settle()
    assert stats.dead == 0
    tally = await _detections(redis_client, names)
    tally.assert_accounted()
    assert tally.kinds() == Counter({"detection.completed": 6})
    assert fake_rtdetr.requests == 12
    assert detector.breaker.state is CircuitState.CLOSED


async def test_detector_circuit_opens_then_a_probe_closes_it(
    fake_rtdetr: FakeRtDetr,
    make_detector: MakeDetector,
    redis_client: Redis,
    names: StreamNames,
    camera_root: Path,
    clock: ManualClock,
) -> None:
    """Threshold 3: the 4th and 5th files never reach the failing service; after the reset
    time one probe goes (still failing: open again), the entries end dead; once the service is
    back a probe closes the circuit and the 5 retried files are detected once each."""
    fake_rtdetr.fail_times(10_000)
    detector = make_detector(max_retries=0, circuit_failure_threshold=3, circuit_reset_seconds=30)
    lane = await _detect_lane(redis_client, names, detector, camera_root, concurrency=1)
    originals = await _publish_files(redis_client, names, camera_root, 5)
    assert len((await lane.deliver()).failed) == 5
    assert (fake_rtdetr.requests, detector.breaker.state) == (3, CircuitState.OPEN)
    clock.advance(30)  # half-open: one probe, which fails and opens the circuit again
    await asyncio.sleep(IDLE_MS / 1000 * 1.5)
    await lane.reclaimer.run_once()
    assert (fake_rtdetr.requests, detector.breaker.state) == (4, CircuitState.OPEN)
    assert (await lane.settle()).dead == 5
    assert fake_rtdetr.requests == 4  # while open, no delivery reached the service
    tally = await _detections(redis_client, names)
    tally.assert_accounted()
    assert sum("circuit is open" in last for last in tally.last_errors.values()) == 5
    fake_rtdetr.reset()
    clock.advance(30)
    copies = await _retry_all(redis_client, names)
    result = await lane.deliver()
    assert not result.failed
    assert (fake_rtdetr.requests, detector.breaker.state) == (5, CircuitState.CLOSED)
    _assert_recovered(
        await _detections(redis_client, names), originals, copies, "detection.completed"
    )


# --- faults of the LLM --------------------------------------------------------------------------

# name → (how the fake misbehaves, requests per delivery, text of the dead letters' last error)
LLM_OUTAGES: dict[str, tuple[Callable[[FakeLLM], None], int, str]] = {
    "slow": (lambda fake: fake.answer_slowly(SLOW_ANSWER), 1, "timed out"),
    "http-500": (lambda fake: fake.fail_times(10_000), 2, "answered 500"),
    "http-503": (lambda fake: fake.fail_times(10_000, status=503), 2, "answered 503"),
}


@pytest.mark.parametrize("fault", sorted(LLM_OUTAGES))
async def test_llm_outage_ends_in_dead_letters_that_retry_recovers(
    fault: str,
    fake_llm: FakeLLM,
    make_analyzer: MakeAnalyzer,
    redis_client: Redis,
    names: StreamNames,
) -> None:
    """3 batches under an LLM that times out or fails: 3 dead letters (never a made-up score),
    nothing pending; once it answers, each retried batch gets exactly one analysis."""
    misbehave, attempts, error = LLM_OUTAGES[fault]
    misbehave(fake_llm)
    slow = {"read_timeout_seconds": SLOW_READ_TIMEOUT, "max_retries": 0} if fault == "slow" else {}
    analyzer = make_analyzer(**slow)
    lane = await _analyze_lane(redis_client, names, analyzer)
    originals = await _publish_batches(redis_client, names, 3)
    assert len((await lane.deliver()).failed) == 3
    assert (await lane.settle()).dead == 3
    tally = await _analyses(redis_client, names)
    tally.assert_accounted()
    assert not tally.outputs
    assert all(error in last for last in tally.last_errors.values()), tally.last_errors
    assert fake_llm.requests == 3 * 3 * attempts  # batches x deliveries x attempts
    _record(f"llm {fault}:", requests=fake_llm.requests)
    fake_llm.reset()
    copies = await _retry_all(redis_client, names)
    await lane.deliver()
    await lane.settle()
    assert fake_llm.requests == 3
    _assert_recovered(await _analyses(redis_client, names), originals, copies, "analysis.completed")


async def test_llm_down_ends_in_dead_letters_until_it_is_back(
    make_analyzer: MakeAnalyzer, redis_client: Redis, names: StreamNames
) -> None:
    """Connection refused: dead letters that say the server cannot be reached; once a server
    listens on that port again, each retried batch gets exactly one analysis."""
    port = free_port()
    analyzer = make_analyzer(base_url=f"http://127.0.0.1:{port}")
    lane = await _analyze_lane(redis_client, names, analyzer)
    originals = await _publish_batches(redis_client, names, 3)
    await lane.deliver()
    assert (await lane.settle()).dead == 3
    tally = await _analyses(redis_client, names)
    tally.assert_accounted()
    assert all("cannot reach" in last for last in tally.last_errors.values())
    with serve_fake_llm(port=port) as (back, _):
        copies = await _retry_all(redis_client, names)
        await lane.deliver()
        await lane.settle()
        assert back.requests == 3
    _assert_recovered(await _analyses(redis_client, names), originals, copies, "analysis.completed")


# name → (how the fake misbehaves, text of the `analysis.failed` error)
LLM_GARBAGE: dict[str, tuple[Callable[[FakeLLM], None], str]] = {
    "html": (lambda fake: fake.answer_garbage(b"<html>Bad Gateway</html>"), "not JSON"),
    "truncated-json": (
        lambda fake: fake.answer_garbage(b'{"choices": [{"message": {"content": "{\\"risk_'),
        "not JSON",
    ),
    "not-an-object": (lambda fake: fake.answer_garbage(b"[1, 2, 3]"), "not a JSON object"),
    "no-choices": (lambda fake: fake.answer_garbage(b'{"choices": []}'), "no choices"),
    "content-parts-not-text": (
        lambda fake: fake.answer_garbage(
            b'{"choices": [{"message": {"content": [{"type": "text", "text": 72}]}}]}'
        ),
        "no JSON object with a risk_score",
    ),
    "deeply-nested": (lambda fake: fake.answer_garbage(b"[" * 100_000), "not JSON"),
    "huge-declared": (lambda fake: fake.answer_huge(HUGE), "more than the 1048576 bytes"),
    "huge-chunked": (
        lambda fake: fake.answer_huge(HUGE, declare_length=False),
        "goes on past the limit",
    ),
}


@pytest.mark.parametrize("fault", sorted(LLM_GARBAGE))
async def test_llm_garbage_is_an_analysis_failed_fact_at_once(
    fault: str,
    fake_llm: FakeLLM,
    make_analyzer: MakeAnalyzer,
    redis_client: Redis,
    names: StreamNames,
) -> None:
    """An answer with no usable assessment: one `analysis.failed` per batch on the first
    delivery, one request each (no retry), no dead letter, nothing pending."""
    misbehave, error = LLM_GARBAGE[fault]
    misbehave(fake_llm)
    analyzer = make_analyzer()
    lane = await _analyze_lane(redis_client, names, analyzer)
    await _publish_batches(redis_client, names, 3)
    assert not (await lane.deliver()).failed
    assert await lane.pending() == 0
    tally = await _analyses(redis_client, names)
    tally.assert_accounted()
    assert tally.kinds() == Counter({"analysis.failed": 3})
    assert all(error in message for message in tally.errors.values()), tally.errors
    assert fake_llm.requests == 3
    assert analyzer.breaker.state is CircuitState.CLOSED  # the server answered
    _record(f"llm {fault}:", requests=fake_llm.requests, sent=fake_llm.bytes_sent)
    if fault.startswith("huge"):
        assert fake_llm.bytes_sent < fake_llm.requests * HUGE / 4, fake_llm.bytes_sent


@pytest.mark.parametrize("max_retries", [0, 1])
async def test_flapping_llm_loses_and_duplicates_nothing(
    max_retries: int,
    fake_llm: FakeLLM,
    make_analyzer: MakeAnalyzer,
    redis_client: Redis,
    names: StreamNames,
) -> None:
    """Every other request fails: 6 batches, 6 analyses, 12 requests, no dead letter; one retry
    absorbs every failure, and the circuit (threshold 2) never opens because each success resets
    the count."""
    fake_llm.flap(500)
    analyzer = make_analyzer(max_retries=max_retries, circuit_failure_threshold=2)
    lane = await _analyze_lane(redis_client, names, analyzer, max_deliveries=10)
    await _publish_batches(redis_client, names, 6)
    first = await lane.deliver()
    assert len(first.failed) == (3 if max_retries == 0 else 0)
    assert (await lane.settle()).dead == 0
    tally = await _analyses(redis_client, names)
    tally.assert_accounted()
    assert tally.kinds() == Counter({"analysis.completed": 6})
    assert fake_llm.requests == 12
    assert analyzer.breaker.state is CircuitState.CLOSED


async def test_llm_circuit_opens_then_a_probe_closes_it(
    fake_llm: FakeLLM,
    make_analyzer: MakeAnalyzer,
    redis_client: Redis,
    names: StreamNames,
    clock: ManualClock,
) -> None:
    """Threshold 2: the 3rd to 5th batches never reach the failing server; after the reset time
    one probe goes (still failing: open again), the batches end dead; once the server is back a
    probe closes the circuit and the 5 retried batches get one analysis each."""
    fake_llm.fail_times(10_000)
    analyzer = make_analyzer(max_retries=0, circuit_failure_threshold=2, circuit_reset_seconds=30)
    lane = await _analyze_lane(redis_client, names, analyzer)
    originals = await _publish_batches(redis_client, names, 5)
    assert len((await lane.deliver()).failed) == 5
    assert (fake_llm.requests, analyzer.breaker.state) == (2, CircuitState.OPEN)
    clock.advance(30)
    await asyncio.sleep(IDLE_MS / 1000 * 1.5)
    await lane.reclaimer.run_once()
    assert (fake_llm.requests, analyzer.breaker.state) == (3, CircuitState.OPEN)
    assert (await lane.settle()).dead == 5
    assert fake_llm.requests == 3
    tally = await _analyses(redis_client, names)
    tally.assert_accounted()
    assert sum("circuit open" in last for last in tally.last_errors.values()) == 5
    fake_llm.reset()
    clock.advance(30)
    copies = await _retry_all(redis_client, names)
    assert not (await lane.deliver()).failed
    assert (fake_llm.requests, analyzer.breaker.state) == (5, CircuitState.CLOSED)
    _assert_recovered(await _analyses(redis_client, names), originals, copies, "analysis.completed")


# --- bounded answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_huge_answers_are_dropped_at_the_cap_not_buffered(
    declare_length: bool,
    fake_rtdetr: FakeRtDetr,
    fake_llm: FakeLLM,
    make_detector: MakeDetector,
    make_analyzer: MakeAnalyzer,
) -> None:
    """50 MB answers: both clients stop at their 1 MiB cap with a clear error, and the process
    never holds more than a few MiB for them."""
    fake_rtdetr.answer_huge(HUGE, declare_length=declare_length)
    fake_llm.answer_huge(HUGE, declare_length=declare_length)
    detector = make_detector(max_retries=0)
    analyzer = make_analyzer(max_retries=0)
    tracemalloc.start()
    try:
        with pytest.raises(DetectorProtocolError, match="too large"):
            await detector.detect(PHOTOS / "cat-chelsea.jpg", "image")
        with pytest.raises(AnalyzerResponseError, match="1048576 bytes"):
            await analyzer.analyze(summarize(_batch(0), "UTC"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _record(
        "huge answers:",
        peak_bytes=peak,
        detector_sent=fake_rtdetr.bytes_sent,
        llm_sent=fake_llm.bytes_sent,
    )
    assert peak < 8 * CAP, peak
    assert (fake_rtdetr.requests, fake_llm.requests) == (1, 1)
    assert fake_rtdetr.bytes_sent < HUGE / 2
    assert fake_llm.bytes_sent < HUGE / 2
    assert detector.breaker.consecutive_failures == 1  # a misbehaving detection service


# --- the whole pipeline and `hsi dlq` -----------------------------------------------------------


@pytest.fixture
async def hsi_env(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    database_url: str,
    db_schema: str,
    db_engine: AsyncEngine,
    key_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[AsyncEngine]:
    """The environment of an `hsi` command on this test's Redis prefix and migrated schema."""
    await migrate(db_engine)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", f"{database_url}?options=-csearch_path%3D{db_schema}")
    monkeypatch.setenv("STREAM_PREFIX", key_prefix)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield db_engine
    get_settings.cache_clear()


async def _hsi(*args: str) -> Result:
    """Run an `hsi` command (it runs its own event loop, so in a thread of its own)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args))
    assert result.exit_code == 0, result.output
    return result


async def _dead_letter_rows(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT entry_id FROM dead_letters ORDER BY entry_id"))
        return [str(row[0]) for row in rows]


async def _wait(check: Callable[[], Awaitable[bool]], seconds: float = TIMEOUT) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


def _pipeline_settings(root: Path, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "foscam_base_path": root,
        "stream_prefix": prefix,
        "stream_reclaim_idle_ms": 300,
        "stream_reclaim_interval_seconds": 0.1,
        "stream_block_ms": 100,
        "stream_max_deliveries": 3,
        "ai_max_retries": 0,
        "ai_retry_backoff_seconds": 0.01,
        "ai_circuit_failure_threshold": 1000,  # the circuits have tests of their own
        "detection_confidence_threshold": 0.3,
        "timezone": "UTC",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def _recover_with_the_cli(
    redis: Redis, names: StreamNames, engine: AsyncEngine, originals: list[str]
) -> dict[str, str]:
    """Project the dead letters, list them and retry each with `hsi dlq`; their rows go."""
    await project_all(redis, stage_for(redis, names, engine), [names.dead(CAMERA)])
    assert await _dead_letter_rows(engine) == sorted(originals)
    listed = (await _hsi("dlq", "list", "--camera", CAMERA)).output.splitlines()
    assert len(listed) == len(originals)
    copies = {}
    for letter in await list_dead(redis, names, [CAMERA], 100):
        shown = await _hsi("dlq", "show", CAMERA, letter.dead_id)
        assert letter.entry_id in shown.output
        retried = await _hsi("dlq", "retry", CAMERA, letter.dead_id)
        copies[retried.output.strip().removeprefix("re-published as ")] = letter.entry_id
    assert await _dead_letter_rows(engine) == []
    return copies


async def test_pipeline_with_llm_down_recovers_through_hsi_dlq_retry(
    hsi_env: AsyncEngine, redis_url: str, redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """The analyze stage of a running pipeline with the LLM down: every batch ends dead (and
    projected); the server comes back, `hsi dlq retry` re-publishes each, and each gets exactly
    one analysis."""
    port = free_port()
    settings = _pipeline_settings(
        tmp_path / "cameras",
        names.prefix,
        analyzer_backend="llm",
        llm_url=f"http://127.0.0.1:{port}",
        llm_connect_timeout_seconds=0.5,
        llm_read_timeout_seconds=2.0,
    )
    pipe = Pipeline(settings, redis_url, PipelineOptions(stages=(Group.ANALYZE,)))
    await pipe.start()
    try:
        originals = await _publish_batches(redis_client, names, 4)
        await pipe.discover()
        await _wait(lambda: _has(redis_client, names.dead(CAMERA), 4))
        await pipe.drain(TIMEOUT)
        tally = await _analyses(redis_client, names)
        tally.assert_accounted()
        assert sorted(tally.dead) == sorted(originals)
        with serve_fake_llm(port=port) as (back, _):
            copies = await _recover_with_the_cli(redis_client, names, hsi_env, originals)
            await _wait(lambda: _has(redis_client, names.analyses(CAMERA), 4))
            await pipe.drain(TIMEOUT)
            assert back.requests == 4
    finally:
        await pipe.stop()
    _assert_recovered(await _analyses(redis_client, names), originals, copies, "analysis.completed")


async def test_pipeline_with_detector_down_recovers_through_hsi_dlq_retry(
    hsi_env: AsyncEngine, redis_url: str, redis_client: Redis, names: StreamNames, tmp_path: Path
) -> None:
    """The detect stage of a running pipeline with RT-DETR refusing connections: every file
    ends dead (and projected); the service comes back, `hsi dlq retry` re-publishes each, and
    each is detected exactly once."""
    port = free_port()
    root = tmp_path / "cameras"
    settings = _pipeline_settings(
        root,
        names.prefix,
        detector_backend="rtdetr",
        rtdetr_url=f"http://127.0.0.1:{port}",
        detector_connect_timeout_seconds=0.5,
        detector_read_timeout_seconds=2.0,
    )
    pipe = Pipeline(settings, redis_url, PipelineOptions(stages=(Group.DETECT,)))
    await pipe.start()
    try:
        originals = await _publish_files(redis_client, names, root, 4)
        await pipe.discover()
        await _wait(lambda: _has(redis_client, names.dead(CAMERA), 4))
        await pipe.drain(TIMEOUT)
        tally = await _detections(redis_client, names)
        tally.assert_accounted()
        assert sorted(tally.dead) == sorted(originals)
        with serve_fake_rtdetr(port=port) as (back, _):
            copies = await _recover_with_the_cli(redis_client, names, hsi_env, originals)
            await _wait(lambda: _has(redis_client, names.detections(CAMERA), 4))
            await pipe.drain(TIMEOUT)
            assert back.requests == 4
    finally:
        await pipe.stop()
    _assert_recovered(
        await _detections(redis_client, names), originals, copies, "detection.completed"
    )


async def _has(redis: Redis, stream: str, count: int) -> bool:
    return int(await redis.xlen(stream)) >= count

"""Pending-entry reclaim against the real server: re-runs, dead letters, deleted groups."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.contract import HandlerResult, StreamEntry
from streams.envelope import DATA_FIELD, HEADER_TRACEPARENT, entry_fields, read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.reclaim import (
    ERROR_DELETED,
    ERROR_MAX_DELIVERIES,
    ReclaimConfig,
    Reclaimer,
    ReclaimStats,
    classify_pending,
    deliveries_made,
)
from streams.schemas import EntryDead, FileObserved

CAMERA = "front_door"
GROUP = Group.DETECT
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TIMEOUT = 5.0


def _file(n: int) -> FileObserved:
    now = datetime(2026, 1, 1, 12, 0, n % 60, tzinfo=UTC)
    return FileObserved(
        camera_id=CAMERA,
        path=f"Front Door/snap/MDAlarm_20260101-1200{n % 60:02d}.jpg",
        sha256=f"{n:064x}",
        size=1000 + n,
        mime="image/jpeg",
        media_kind="image",
        captured_at=now,
        capture_source="filename",
        observed_at=now,
    )


async def _publish(redis: Redis, stream: str, count: int) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(stream, {**entry_fields(_file(n), {HEADER_TRACEPARENT: TRACEPARENT})})
        ids = await pipe.execute()
    return [entry_id.decode() for entry_id in ids]


async def _read_and_die(redis: Redis, stream: str, consumer: str = "crashed-1") -> list[str]:
    """A consumer that takes entries and never acks them (it crashed)."""
    reply: Any = await redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=10_000)
    return [entry_id.decode() for entry_id, _ in reply[0][1]] if reply else []


async def _dead_letters(redis: Redis, names: StreamNames) -> list[EntryDead]:
    letters = []
    for _, fields in await redis.xrange(names.dead(CAMERA)):
        entry, _ = read_fields(fields)
        assert isinstance(entry, EntryDead)
        letters.append(entry)
    return letters


async def _pending_count(redis: Redis, stream: str) -> int:
    summary: Any = await redis.xpending(stream, GROUP)
    return int(summary["pending"])


class Recorder:
    """The stage's batch handler as a test sees it: records what it processed and XACKs it.

    It raises for the whole batch when a poison entry is in it, and reports `failing` entries as
    failures (left pending) without raising.
    """

    def __init__(
        self, redis: Redis, poison: set[str] | None = None, failing: dict[str, str] | None = None
    ) -> None:
        self.redis = redis
        self.poison = poison or set()
        self.failing = failing or {}
        self.processed: list[str] = []
        self.calls: Counter[str] = Counter()

    async def __call__(self, stream: str, entries: list[StreamEntry]) -> HandlerResult:
        ids = [entry_id for entry_id, _ in entries]
        self.calls.update(ids)
        for entry_id, fields in entries:
            assert DATA_FIELD in fields
            if entry_id in self.poison:
                raise RuntimeError(f"cannot decode image of entry {entry_id}")
        done = [entry_id for entry_id in ids if entry_id not in self.failing]
        if done:
            await self.redis.xack(stream, GROUP, *done)
        self.processed.extend(done)
        return HandlerResult(
            failed={
                entry_id: self.failing[entry_id] for entry_id in ids if entry_id in self.failing
            }
        )


def _reclaimer(
    redis: Redis,
    names: StreamNames,
    handler: Recorder,
    *,
    consumer: str = "host-1-reclaim",
    idle_ms: int = 100,
    max_deliveries: int = 3,
    batch_size: int = 100,
    interval_seconds: float = 0.02,
) -> Reclaimer:
    return Reclaimer(
        redis,
        names,
        group=GROUP,
        streams=[names.files(CAMERA)],
        config=ReclaimConfig(
            idle_ms=idle_ms,
            max_deliveries=max_deliveries,
            batch_size=batch_size,
            interval_seconds=interval_seconds,
            backoff_base_seconds=0.01,
            backoff_cap_seconds=0.05,
        ),
        consumer=consumer,
        handler=handler,
    )


async def _reclaim_until(
    reclaimers: list[Reclaimer], done: Callable[[ReclaimStats], bool], seconds: float = TIMEOUT
) -> list[ReclaimStats]:
    """Run rounds (all reclaimers concurrently) until `done(total so far)`; fail after `seconds`.

    Returns each reclaimer's own stats.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    totals = [ReclaimStats() for _ in reclaimers]
    while not done(sum(totals, ReclaimStats())):
        assert loop.time() < deadline, f"condition not met within {seconds} s (stats: {totals})"
        rounds = await asyncio.gather(*(r.run_once() for r in reclaimers))
        totals = [total + stats for total, stats in zip(totals, rounds, strict=True)]
        await asyncio.sleep(0.02)
    return totals


async def _eventually(done: Callable[[], Awaitable[bool]], seconds: float = TIMEOUT) -> None:
    """Poll `done()` until it is true; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await done():
        assert loop.time() < deadline, f"condition not met within {seconds} s"
        await asyncio.sleep(0.02)


@pytest.fixture
async def names(redis_client: Redis, key_prefix: str) -> StreamNames:
    names = StreamNames(key_prefix)
    await ensure_group(redis_client, names.files(CAMERA), GROUP)
    return names


# --- decisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pending", "max_deliveries", "rerun", "dead"),
    [
        pytest.param({"1-0": 2}, 3, ["1-0"], [], id="one-delivery-made"),
        pytest.param({"1-0": 3}, 3, ["1-0"], [], id="two-deliveries-made"),
        pytest.param({"1-0": 4}, 3, [], ["1-0"], id="max-deliveries-made"),
        pytest.param({"1-0": 9}, 3, [], ["1-0"], id="beyond-max"),
        pytest.param({"1-0": 2}, 1, [], ["1-0"], id="max-one-no-second-chance"),
        pytest.param(
            {"1-0": 2, "2-0": 5, "3-0": 3, "4-0": 4}, 3, ["1-0", "3-0"], ["2-0", "4-0"], id="mixed"
        ),
        pytest.param({}, 3, [], [], id="nothing"),
    ],
)
def test_classify_pending_buries_entries_delivered_max_times(
    pending: dict[str, int], max_deliveries: int, rerun: list[str], dead: list[str]
) -> None:
    """Counts taken right after our claim include it; max_deliveries made means dead."""
    assert classify_pending(pending, max_deliveries) == (rerun, dead)


def test_deliveries_made_discounts_the_reclaimers_own_claim() -> None:
    """XPENDING's count after XAUTOCLAIM is one more than the deliveries to consumers."""
    assert [deliveries_made(n) for n in (0, 1, 2, 5)] == [0, 0, 1, 4]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle_ms": 0, "max_deliveries": 3},
        {"idle_ms": 100, "max_deliveries": 0},
        {"idle_ms": 100, "max_deliveries": 3, "batch_size": 0},
        {"idle_ms": 100, "max_deliveries": 3, "interval_seconds": 0},
    ],
)
def test_reclaim_config_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    """Zero idle time, deliveries, batch size or interval are configuration errors."""
    with pytest.raises(ValueError, match="must be"):
        ReclaimConfig(**kwargs)


def test_stats_add_up() -> None:
    """Round stats sum field by field."""
    assert ReclaimStats(1, 2, 3, 4) + ReclaimStats(10, 20, 30, 40) == ReclaimStats(11, 22, 33, 44)


# --- against Redis ------------------------------------------------------------------------------


async def test_entries_of_a_dead_consumer_are_processed_exactly_once(
    redis_client: Redis, names: StreamNames
) -> None:
    """Entries a crashed consumer held are claimed after idle_ms and handled once each."""
    stream = names.files(CAMERA)
    ids = await _publish(redis_client, stream, 5)
    assert await _read_and_die(redis_client, stream) == ids
    handler = Recorder(redis_client)
    reclaimer = _reclaimer(redis_client, names, handler)

    [stats] = await _reclaim_until([reclaimer], lambda _: len(handler.processed) >= len(ids))

    assert handler.processed == ids
    assert stats == ReclaimStats(claimed=5, rerun=5, dead=0, deleted=0)
    assert await _pending_count(redis_client, stream) == 0
    assert await reclaimer.run_once() == ReclaimStats()
    assert await _dead_letters(redis_client, names) == []


async def test_poison_entry_ends_dead_after_max_deliveries_while_neighbours_flow(
    redis_client: Redis, names: StreamNames
) -> None:
    """An entry the handler always fails on is buried with its last error; the others pass."""
    stream = names.files(CAMERA)
    ids = await _publish(redis_client, stream, 3)
    poison = ids[1]
    original = await redis_client.xrange(stream, poison, poison)
    await _read_and_die(redis_client, stream)
    handler = Recorder(redis_client, poison={poison})
    reclaimer = _reclaimer(redis_client, names, handler, max_deliveries=3)

    [stats] = await _reclaim_until([reclaimer], lambda total: total.dead >= 1)

    [letter] = await _dead_letters(redis_client, names)
    assert letter.entry_id == poison
    assert letter.type == "entry.dead"
    assert letter.source_stream == stream
    assert letter.group == GROUP
    assert letter.camera_id == CAMERA
    assert letter.deliveries == 3
    assert letter.last_error == f"RuntimeError: cannot decode image of entry {poison}"
    assert letter.original == base64.b64encode(original[0][1][DATA_FIELD]).decode()
    # Deliveries: one to the crashed consumer, two re-runs. The first re-run called the handler
    # twice (the whole batch raised, then the entry alone), so three calls in all.
    assert handler.calls[poison] == 3
    assert sorted(handler.processed) == sorted([ids[0], ids[2]])
    assert await _pending_count(redis_client, stream) == 0
    assert stats.dead == 1


async def test_failure_reported_by_the_handler_becomes_the_dead_letters_error(
    redis_client: Redis, names: StreamNames
) -> None:
    """A failure the handler returns (without raising) is kept and buried with the entry."""
    stream = names.files(CAMERA)
    [entry_id] = await _publish(redis_client, stream, 1)
    await _read_and_die(redis_client, stream)
    handler = Recorder(redis_client, failing={entry_id: "detector answered 503 three times"})
    reclaimer = _reclaimer(redis_client, names, handler, max_deliveries=2)

    await _reclaim_until([reclaimer], lambda total: total.dead >= 1)

    [letter] = await _dead_letters(redis_client, names)
    assert letter.last_error == "detector answered 503 three times"
    assert letter.deliveries == 2
    assert handler.calls[entry_id] == 1


async def test_entry_with_no_known_error_is_buried_as_exceeding_max_deliveries(
    redis_client: Redis, names: StreamNames
) -> None:
    """With max_deliveries=1, an entry its consumer never acked is buried on first claim."""
    stream = names.files(CAMERA)
    [entry_id] = await _publish(redis_client, stream, 1)
    await _read_and_die(redis_client, stream)
    handler = Recorder(redis_client)
    reclaimer = _reclaimer(redis_client, names, handler, max_deliveries=1)

    [stats] = await _reclaim_until([reclaimer], lambda total: total.dead >= 1)

    [letter] = await _dead_letters(redis_client, names)
    assert (letter.entry_id, letter.deliveries) == (entry_id, 1)
    assert letter.last_error == ERROR_MAX_DELIVERIES
    assert stats.rerun == 0
    assert handler.calls == Counter()


async def test_failure_recorded_by_the_stage_becomes_the_dead_letters_error(
    redis_client: Redis, names: StreamNames
) -> None:
    """Errors the stage met on a fresh delivery (`record_failures`) end in the dead letter."""
    stream = names.files(CAMERA)
    [entry_id] = await _publish(redis_client, stream, 1)
    await _read_and_die(redis_client, stream)
    reclaimer = _reclaimer(redis_client, names, Recorder(redis_client), max_deliveries=1)
    reclaimer.record_failures(stream, {entry_id: "TimeoutError: detector did not answer"})

    await _reclaim_until([reclaimer], lambda total: total.dead >= 1)

    [letter] = await _dead_letters(redis_client, names)
    assert letter.last_error == "TimeoutError: detector did not answer"


async def test_deleted_pending_entry_is_recorded_dead_without_original(
    redis_client: Redis, names: StreamNames
) -> None:
    """An entry XDEL'd while pending becomes an entry.dead with original None, and is acked."""
    stream = names.files(CAMERA)
    ids = await _publish(redis_client, stream, 2)
    await _read_and_die(redis_client, stream)
    await redis_client.xdel(stream, ids[0])
    handler = Recorder(redis_client)
    reclaimer = _reclaimer(redis_client, names, handler)

    [stats] = await _reclaim_until(
        [reclaimer], lambda total: total.deleted >= 1 and bool(handler.processed)
    )

    [letter] = await _dead_letters(redis_client, names)
    assert letter.entry_id == ids[0]
    assert letter.original is None
    assert letter.last_error == ERROR_DELETED
    assert handler.processed == [ids[1]]
    assert stats.deleted == 1
    assert await _pending_count(redis_client, stream) == 0


async def test_dead_letter_write_and_ack_are_one_transaction(
    redis_client: Redis, names: StreamNames
) -> None:
    """The XADD to the dead stream and the XACK of the source go in one MULTI/EXEC, both done."""
    stream = names.files(CAMERA)
    [entry_id] = await _publish(redis_client, stream, 1)
    await _read_and_die(redis_client, stream)
    reclaimer = _reclaimer(redis_client, names, Recorder(redis_client), max_deliveries=1)
    seen: list[tuple[str, str]] = []  # (client port, command)

    async with redis_client.monitor() as monitor:
        await _reclaim_until([reclaimer], lambda total: total.dead >= 1)

        def transaction_seen() -> bool:
            acked = any(text.startswith(f"XACK {stream}") for _, text in seen)
            return acked and seen[-1][1] == "EXEC"

        async with asyncio.timeout(TIMEOUT):
            while not transaction_seen():
                command = await monitor.next_command()
                seen.append((str(command["client_port"]), str(command["command"])))

    port = next(p for p, text in seen if text.startswith(f"XADD {names.dead(CAMERA)}"))
    same_client = [text.split(" ")[0] for p, text in seen if p == port]
    start = same_client.index("XADD") - 1
    assert same_client[start : start + 4] == ["MULTI", "XADD", "XACK", "EXEC"]
    [letter] = await _dead_letters(redis_client, names)
    assert letter.entry_id == entry_id
    assert await _pending_count(redis_client, stream) == 0


async def test_deleted_group_is_recreated_and_the_loop_keeps_going(
    redis_client: Redis, names: StreamNames, caplog: pytest.LogCaptureFixture
) -> None:
    """After XGROUP DESTROY, `run` recreates the group, logs it, and goes on reclaiming."""
    caplog.set_level(logging.INFO, logger="hsi.reclaim")
    stream = names.files(CAMERA)
    handler = Recorder(redis_client)
    reclaimer = _reclaimer(redis_client, names, handler)
    stop = asyncio.Event()
    task = asyncio.create_task(reclaimer.run(stop))
    try:
        await redis_client.xgroup_destroy(stream, GROUP)

        async def recreated() -> bool:
            groups: Any = await redis_client.xinfo_groups(stream)
            return bool(groups) and any(
                r.getMessage() == "reclaim.group_recreated" for r in caplog.records
            )

        await _eventually(recreated)
        [entry_id] = await _publish(redis_client, stream, 1)
        await _read_and_die(redis_client, stream)

        async def processed() -> bool:
            return entry_id in handler.processed

        await _eventually(processed)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    record = next(r for r in caplog.records if r.getMessage() == "reclaim.group_recreated")
    assert record.hsi_fields["stream"] == stream  # type: ignore[attr-defined]  # set via extra


class _FirstBatchGate:
    """Each reclaimer's handler: its first batch waits until every reclaimer holds one, so the
    test sees the reclaimers contend for the same pending entries whatever the scheduling."""

    def __init__(self, handler: Recorder, parties: int) -> None:
        self.handler = handler
        self.parties = parties
        self.taken: Counter[str] = Counter()
        self.all_in = asyncio.Event()

    def for_consumer(self, consumer: str) -> Callable[[str, list[Any]], Awaitable[Any]]:
        async def handle(stream: str, entries: list[Any]) -> Any:
            self.taken[consumer] += len(entries)
            if len(self.taken) == self.parties:
                self.all_in.set()
            await asyncio.wait_for(self.all_in.wait(), TIMEOUT)
            return await self.handler(stream, entries)

        return handle


async def test_two_reclaimers_never_process_the_same_entry_twice(
    redis_client: Redis, names: StreamNames
) -> None:
    """XAUTOCLAIM is atomic: two reclaimers of one group split the entries between them."""
    stream = names.files(CAMERA)
    ids = await _publish(redis_client, stream, 60)
    await _read_and_die(redis_client, stream)
    handler = Recorder(redis_client)
    gate = _FirstBatchGate(handler, parties=2)
    consumers = [f"host-{n}-reclaim" for n in (1, 2)]
    # The idle time must exceed what a round takes on a busy machine: an entry one reclaimer
    # claimed and has not handled yet for longer than that is fair game for the other.
    reclaimers = [
        _reclaimer(
            redis_client,
            names,
            gate.for_consumer(consumer),  # type: ignore[arg-type]  # a Recorder behind a gate
            consumer=consumer,
            batch_size=7,
            idle_ms=1500,
        )
        for consumer in consumers
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(reclaimer.run(stop)) for reclaimer in reclaimers]
    try:

        async def all_processed() -> bool:
            return len(set(handler.processed)) >= len(ids)

        await _eventually(all_processed, seconds=30)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)

    duplicates = [entry_id for entry_id, n in Counter(handler.processed).items() if n > 1]
    assert duplicates == []
    assert sorted(handler.processed) == sorted(ids)
    assert sum(gate.taken.values()) == len(ids)  # no entry claimed twice either
    assert all(gate.taken[consumer] > 0 for consumer in consumers)  # both took a share
    assert await _pending_count(redis_client, stream) == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_outage_is_logged_and_the_loop_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis unreachable, `run` logs reclaim.redis_unavailable, backs off and retries."""
    caplog.set_level(logging.INFO, logger="hsi.reclaim")
    unreachable = Redis(
        host="127.0.0.1",
        port=_closed_port(),
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    names = StreamNames("toutage")
    reclaimer = _reclaimer(unreachable, names, Recorder(unreachable))
    stop = asyncio.Event()
    task = asyncio.create_task(reclaimer.run(stop))

    async def retried() -> bool:
        outages = [r for r in caplog.records if r.getMessage() == "reclaim.redis_unavailable"]
        return len(outages) >= 3

    try:
        await _eventually(retried)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
        await unreachable.aclose()

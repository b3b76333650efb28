"""The batch stage on a real Redis: closing by tick, the already-acknowledged guard and exactly one
`batch.closed` when two workers close the same batch at once (the WATCH/MULTI).

A race is made deterministic through the stage's clock, which the stage reads inside its WATCH
(after reading the open batch, before the MULTI): the racing clock runs the rival worker to
completion at that moment, on an event loop and a Redis connection of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from hsi.infra.redis import RedisConfig, create_redis
from streams.batching import BatchConfig, batch_id_for
from streams.confirmation import Confirmation
from streams.envelope import entry_fields, read_fields
from streams.groups import ensure_group
from streams.names import Group, StreamNames
from streams.reclaim import StreamEntry
from streams.schemas import BatchClosed, DetectedObject
from streams.stages import batch as batch_module
from streams.stages.batch import BatchStage
from tests.projections.builders import (
    CAMERA,
    T0,
    detected,
    detection_completed,
    file_observed,
)

T = TypeVar("T")
CONFIG = BatchConfig(window_seconds=60, idle_seconds=10)
CAR = detected("car", 0.8)
PERSON_SURE = detected("person", 0.95)  # above the fast-path threshold: closes at once
START = T0.timestamp()


class Clock:
    """The stage's clock, set by the test (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RacingClock(Clock):
    """A clock whose first reading first runs `rival` to completion (see the module docstring)."""

    def __init__(self, now: float, rival: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(now)
        self._rival: Callable[[], Awaitable[Any]] | None = rival
        self.rival_result: Any = None

    def __call__(self) -> float:
        if self._rival is not None:
            rival, self._rival = self._rival, None
            self.rival_result = elsewhere(rival)
        return self.now


def elsewhere(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` on an event loop of its own thread and wait for its result (blocking)."""

    async def main() -> T:
        return await work()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


def _stage(redis: Redis, names: StreamNames, clock: Callable[[], float]) -> BatchStage:
    return BatchStage(redis=redis, names=names, config=CONFIG, clock=clock)


def _rival_tick(redis_url: str, names: StreamNames, now: float) -> Callable[[], Awaitable[bool]]:
    """Another batch worker's timer firing at `now`, with a Redis connection of its own."""

    async def tick() -> bool:
        client = create_redis(RedisConfig(url=redis_url))
        try:
            return await _stage(client, names, Clock(now)).tick_camera(CAMERA)
        finally:
            await client.aclose()

    return tick


async def _detections(
    redis: Redis, names: StreamNames, *objects: tuple[DetectedObject, ...], gap: float = 1
) -> list[str]:
    """One detections entry per tuple of objects; file n is observed at T0 + n × `gap` + 1 s."""
    stream = names.detections(CAMERA)
    await ensure_group(redis, stream, Group.BATCH.value)
    ids = []
    for n, found in enumerate(objects, start=1):
        file = file_observed(n, captured=T0 + timedelta(seconds=n * gap))
        entry = detection_completed(file, f"{n}-0", found)
        ids.append((await redis.xadd(stream, entry_fields(entry))).decode())  # type: ignore[arg-type]
    return ids


async def _read(redis: Redis, names: StreamNames, consumer: str = "c1") -> list[StreamEntry]:
    """What the stage runner hands the stage: the next new entries, for `consumer`."""
    stream = names.detections(CAMERA)
    reply: Any = await redis.xreadgroup(Group.BATCH.value, consumer, {stream: ">"})
    return [(i.decode(), f) for _, rows in reply for i, f in rows]


async def _closed(redis: Redis, names: StreamNames) -> list[BatchClosed]:
    rows: Any = await redis.xrange(names.batches(CAMERA))
    found = [read_fields(fields)[0] for _, fields in rows]
    assert all(isinstance(entry, BatchClosed) for entry in found)
    return found


async def _pending(redis: Redis, names: StreamNames) -> int:
    summary: Any = await redis.xpending(names.detections(CAMERA), Group.BATCH.value)
    return int(summary["pending"])


def _members(batch: BatchClosed) -> list[str]:
    return [d.entry_id for d in batch.detections]


async def test_a_tick_closes_the_open_batch_once_its_deadline_has_passed(
    redis_client: Redis, key_prefix: str
) -> None:
    """The timer closes the open batch at its idle deadline on the camera's clock — idle seconds
    after its last item arrived — not before, once, with its entries; the batch's close time is
    the deadline in capture time."""
    names = StreamNames(key_prefix)
    ids = await _detections(redis_client, names, (CAR,), (CAR, CAR))
    clock = Clock(START + 100)  # the items arrive 100 s after the first picture was taken
    stage = _stage(redis_client, names, clock)
    result = await stage.handle(names.detections(CAMERA), await _read(redis_client, names))
    assert result.failed == {}
    assert await _pending(redis_client, names) == 0
    assert await redis_client.exists(names.open_batch(CAMERA))
    deadline = START + 100 + CONFIG.idle_seconds

    clock.now = deadline - 0.001
    assert not await stage.tick_camera(CAMERA)
    assert await _closed(redis_client, names) == []
    clock.now = deadline
    assert await stage.tick_camera(CAMERA)
    assert not await stage.tick_camera(CAMERA)

    (batch,) = await _closed(redis_client, names)
    assert _members(batch) == ids
    assert batch.batch_id == batch_id_for(CAMERA, ids[0])
    assert (batch.close_reason, batch.detection_count) == ("idle", 3)
    assert batch.closed_at.timestamp() == START + 2 + CONFIG.idle_seconds  # taken at T0 + 2 s
    assert batch.arrival_delay_seconds == 1.0  # each file was seen a second after it was taken
    assert not await redis_client.exists(names.open_batch(CAMERA))


async def test_an_entry_another_consumer_acknowledged_meanwhile_is_skipped(
    redis_client: Redis, key_prefix: str
) -> None:
    """A detection another consumer batched and acknowledged meanwhile is not batched again."""
    names = StreamNames(key_prefix)
    stream = names.detections(CAMERA)
    (entry_id,) = await _detections(redis_client, names, (PERSON_SURE,))
    slow = await _read(redis_client, names, consumer="slow")
    claimed: Any = await redis_client.xclaim(stream, Group.BATCH.value, "fast", 0, [entry_id])
    fast = _stage(redis_client, names, Clock(START + 100))
    await fast.handle(stream, [(i.decode(), f) for i, f in claimed])
    assert [_members(b) for b in await _closed(redis_client, names)] == [[entry_id]]

    result = await _stage(redis_client, names, Clock(START + 100)).handle(stream, slow)
    assert result.failed == {}
    assert [_members(b) for b in await _closed(redis_client, names)] == [[entry_id]]
    assert not await redis_client.exists(names.open_batch(CAMERA))
    assert await _pending(redis_client, names) == 0


async def test_two_workers_ticking_at_once_close_the_batch_once(
    redis_client: Redis, redis_url: str, key_prefix: str
) -> None:
    """Two timers closing one batch at once: one closes it, the other's WATCH sees that."""
    names = StreamNames(key_prefix)
    await _detections(redis_client, names, (CAR,))
    await _stage(redis_client, names, Clock(START + 100)).handle(
        names.detections(CAMERA), await _read(redis_client, names)
    )
    late = START + 200
    clock = RacingClock(late, _rival_tick(redis_url, names, late))
    closed_here = await _stage(redis_client, names, clock).tick_camera(CAMERA)
    assert (clock.rival_result, closed_here) == (True, False)
    assert len(await _closed(redis_client, names)) == 1
    assert not await redis_client.exists(names.open_batch(CAMERA))


async def test_an_arrival_racing_a_tick_closes_the_expired_batch_once(
    redis_client: Redis, redis_url: str, key_prefix: str
) -> None:
    """An arrival racing a timer closes the expired batch once and opens the next batch."""
    names = StreamNames(key_prefix)
    stream = names.detections(CAMERA)
    # The first taken at T0 + 30 s, the second at T0 + 60 s: past the first's idle deadline. The
    # first arrives at START + 100; the second arrives, and the rival's timer fires, idle seconds
    # later (the first's deadline on the camera's clock).
    first, second = await _detections(redis_client, names, (CAR,), (CAR,), gap=30)
    entries = await _read(redis_client, names)
    await _stage(redis_client, names, Clock(START + 100)).handle(stream, entries[:1])
    later = START + 100 + CONFIG.idle_seconds
    clock = RacingClock(later, _rival_tick(redis_url, names, later))
    result = await _stage(redis_client, names, clock).handle(stream, entries[1:])
    assert result.failed == {}
    assert clock.rival_result is True
    assert [(_members(b), b.close_reason) for b in await _closed(redis_client, names)] == [
        ([first], "idle")
    ]
    assert await _pending(redis_client, names) == 0

    clock.now = START + 200
    assert await _stage(redis_client, names, clock).tick_camera(CAMERA)
    assert [_members(b) for b in await _closed(redis_client, names)] == [[first], [second]]


async def test_a_burst_confirms_its_objects_and_a_lone_faint_one_makes_no_event(
    redis_client: Redis, key_prefix: str
) -> None:
    """Bar 0.6: a faint person in two files of a burst counts; a faint dog in one file does not,
    and a batch holding nothing else is never written (no event for a lone faint sighting)."""
    names = StreamNames(key_prefix)
    faint_person, faint_dog = detected("person", 0.45), detected("dog", 0.5)
    ids = await _detections(redis_client, names, (faint_person, faint_dog), (faint_person,))
    clock = Clock(START + 100)
    stage = BatchStage(
        redis=redis_client,
        names=names,
        config=CONFIG,
        clock=clock,
        confirmation=Confirmation(bar=0.6),
    )
    stream = names.detections(CAMERA)
    assert (await stage.handle(stream, await _read(redis_client, names))).failed == {}
    clock.now = START + 100 + CONFIG.idle_seconds
    assert await stage.tick_camera(CAMERA)
    (batch,) = await _closed(redis_client, names)
    assert _members(batch) == ids
    assert [[o.label for o in d.objects] for d in batch.detections] == [["person"], ["person"]]
    assert (batch.detection_count, batch.object_types, batch.max_confidence) == (
        2,
        ("person",),
        0.45,
    )

    await _detections(redis_client, names, (faint_dog,), gap=200)
    clock.now = START + 1000
    assert (await stage.handle(stream, await _read(redis_client, names))).failed == {}
    clock.now = START + 2000
    assert await stage.tick_camera(CAMERA)  # closed, but nothing confirmed: nothing written
    assert len(await _closed(redis_client, names)) == 1
    assert not await redis_client.exists(names.open_batch(CAMERA))
    assert await _pending(redis_client, names) == 0


class _Transactions:
    """Counts the WATCH/MULTI transactions the batch stage opens (its slow path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = 0
        real = batch_module.transaction

        def counting(redis: Any) -> Any:
            self.opened += 1
            return real(redis)

        monkeypatch.setattr(batch_module, "transaction", counting)


async def test_a_stage_that_stored_the_state_advances_it_in_one_script(
    redis_client: Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch of a camera goes through the WATCH/MULTI; the next ones, worked out from
    the state this stage stored, through the one-round-trip script: same batches, each entry
    acknowledged once."""
    names = StreamNames(key_prefix)
    stream = names.detections(CAMERA)
    transactions = _Transactions(monkeypatch)
    stage = _stage(redis_client, names, Clock(START + 100))
    first = await _detections(redis_client, names, (CAR,), (CAR,))
    await stage.handle(stream, await _read(redis_client, names))
    assert transactions.opened == 1
    more = [
        (await redis_client.xadd(stream, entry_fields(entry))).decode()  # type: ignore[arg-type]
        for entry in (
            detection_completed(file_observed(n, captured=T0 + timedelta(seconds=n)), f"{n}-0", o)
            for n, o in ((3, (CAR,)), (4, (PERSON_SURE,)))
        )
    ]
    await stage.handle(stream, await _read(redis_client, names))
    assert transactions.opened == 1  # no WATCH/MULTI: the script did it
    (batch,) = await _closed(redis_client, names)
    assert _members(batch) == first + more
    assert batch.close_reason == "fast_path"
    assert await _pending(redis_client, names) == 0
    assert not await redis_client.exists(names.open_batch(CAMERA))


async def test_a_state_changed_elsewhere_sends_the_stage_back_to_the_watch(
    redis_client: Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker changed the open batch since this stage stored it, or an entry was
    acknowledged meanwhile (a dead letter): the script writes nothing, the WATCH/MULTI path
    decides on what Redis holds, and every entry is in exactly one batch."""
    names = StreamNames(key_prefix)
    stream = names.detections(CAMERA)
    transactions = _Transactions(monkeypatch)
    here = _stage(redis_client, names, Clock(START + 100))
    ids = await _detections(redis_client, names, (CAR,), (CAR,), (CAR,), (CAR,), (CAR,))
    rows: Any = await redis_client.xreadgroup(Group.BATCH.value, "here", {stream: ">"}, count=1)
    await here.handle(stream, [(i.decode(), f) for _, r in rows for i, f in r])
    # Another worker takes the second entry and changes the stored state.
    rows = await redis_client.xreadgroup(Group.BATCH.value, "there", {stream: ">"}, count=1)
    there = _stage(redis_client, names, Clock(START + 100))
    await there.handle(stream, [(i.decode(), f) for _, r in rows for i, f in r])
    opened = transactions.opened
    await here.handle(stream, await _read(redis_client, names, "here"))  # the other three
    assert transactions.opened == opened + 1  # the script refused: back to the WATCH/MULTI
    # An entry acknowledged by someone else (the state unchanged): skipped, nothing written.
    (late,) = await _detections(redis_client, names, (CAR,))
    entries = await _read(redis_client, names, "here")
    await redis_client.xack(stream, Group.BATCH.value, late)
    opened = transactions.opened
    raw = await redis_client.get(names.open_batch(CAMERA))
    await here.handle(stream, entries)
    assert transactions.opened == opened + 1
    assert await redis_client.get(names.open_batch(CAMERA)) == raw
    assert await here.tick_camera(CAMERA) is False
    here_clock = Clock(START + 1000)
    assert await _stage(redis_client, names, here_clock).tick_camera(CAMERA)
    (batch,) = await _closed(redis_client, names)
    assert _members(batch) == ids
    assert await _pending(redis_client, names) == 0

"""Pending-entry reclaim: re-run stuck entries, and bury the ones that keep failing.

One `Reclaimer` runs per consumer group beside the group's consumers, over that group's camera
streams. Each round, per stream, it `XAUTOCLAIM`s the entries idle longer than `idle_ms` (following
the cursor back to 0-0) and then:

- ids that XAUTOCLAIM reports as deleted (the entry was XDEL'd or trimmed while pending) become an
  `entry.dead` with `original=None`, and are XACKed;
- for the claimed entries, one `XPENDING` range call gives the delivery counts. An entry already
  delivered `max_deliveries` times is not run again: an `entry.dead` goes to the camera's dead
  stream and the source entry is XACKed in the same MULTI (both keys carry the camera's hash tag,
  so they share a slot, on Redis Cluster too);
- the others go through the stage's own batch handler, which writes outputs and XACKs what
  succeeded. When the handler raises for a whole batch, the entries are run one at a time, so one
  poison entry cannot hold its neighbours back.

XAUTOCLAIM itself counts a delivery, so right after a claim XPENDING reports one more delivery than
the number of times the entry was actually handed to a consumer (`deliveries_made`).

A buried entry counts as outcome `dead` of its group in `hsi_entries_processed_total`, and gets a
`dead` span in the entry's own trace when it carries a `traceparent` (`streams.burial`).

A lost group (NOGROUP from XAUTOCLAIM or XPENDING: XGROUP DESTROY, the stream deleted, the server
flushed) is recreated where the reclaimer last saw it (`streams.groups.GroupPositions`, read at
every round), with a `reclaim.group_recreated` warning, and the loop goes on.

Dead letters carry the last error known for the entry: the reclaimer keeps a bounded map of the
errors its handler runs reported (a stage can add its own with `record_failures`), falling back to
"exceeded max deliveries".
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypedDict

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.burial import Burial, bury, record_dead
from streams.clock import utc_now
from streams.contract import BatchHandler, HandlerResult, StreamEntry, error_text
from streams.dlq import MAX_ERROR_CHARS
from streams.envelope import DATA_FIELD
from streams.groups import GroupPositions, is_missing_group_error
from streams.logs import log_event
from streams.names import StreamNames
from streams.replies import id_key, reply_text
from streams.resilience import backoff_delay
from streams.tracing import StageTelemetry, resolve

logger = logging.getLogger("hsi.reclaim")

ERROR_DELETED = "entry deleted before it was processed"
ERROR_MAX_DELIVERIES = "exceeded max deliveries"
_CURSOR_DONE = "0-0"


@dataclass(frozen=True)
class ReclaimConfig:
    """How a reclaimer works: entries idle `idle_ms` are claimed, `batch_size` per XAUTOCLAIM,
    every `interval_seconds`; after `max_deliveries` deliveries an entry is dead. A Redis outage
    is retried after `backoff_delay(attempt, backoff_base_seconds, backoff_cap_seconds, …)`."""

    idle_ms: int
    max_deliveries: int
    batch_size: int = 100
    interval_seconds: float = 5.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    max_remembered_errors: int = 10_000

    def __post_init__(self) -> None:
        if self.idle_ms < 1:
            raise ValueError(f"idle_ms must be >= 1, got {self.idle_ms}")
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {self.max_deliveries}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {self.interval_seconds}")
        if self.max_remembered_errors < 0:
            raise ValueError(
                f"max_remembered_errors must be >= 0, got {self.max_remembered_errors}"
            )


@dataclass(frozen=True)
class ReclaimStats:
    """What one round did: entries claimed, re-run through the handler, buried, found deleted."""

    claimed: int = 0
    rerun: int = 0
    dead: int = 0
    deleted: int = 0

    def __add__(self, other: ReclaimStats) -> ReclaimStats:
        return ReclaimStats(
            claimed=self.claimed + other.claimed,
            rerun=self.rerun + other.rerun,
            dead=self.dead + other.dead,
            deleted=self.deleted + other.deleted,
        )


# --- decisions ----------------------------------------------------------------------------------


def deliveries_made(times_delivered: int) -> int:
    """Deliveries to consumers, from XPENDING's count taken right after our own XAUTOCLAIM."""
    return max(0, times_delivered - 1)


def classify_pending(
    pending: Mapping[str, int], max_deliveries: int
) -> tuple[list[str], list[str]]:
    """Split claimed entries into (re-run, dead), keeping their order.

    `pending` maps entry id → times delivered as XPENDING reports it right after the claim (the
    claim counted as one). An entry already delivered `max_deliveries` times is dead.
    """
    if max_deliveries < 1:
        raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries}")
    rerun: list[str] = []
    dead: list[str] = []
    for entry_id, times_delivered in pending.items():
        (dead if deliveries_made(times_delivered) >= max_deliveries else rerun).append(entry_id)
    return rerun, dead


class _LastErrors:
    """The last error seen per (stream, entry id), forgetting the oldest beyond `limit`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._errors: OrderedDict[tuple[str, str], str] = OrderedDict()

    def set(self, stream: str, entry_id: str, error: str) -> None:
        if self._limit == 0:
            return
        key = (stream, entry_id)
        self._errors[key] = error[:MAX_ERROR_CHARS]
        self._errors.move_to_end(key)
        while len(self._errors) > self._limit:
            self._errors.popitem(last=False)

    def pop(self, stream: str, entry_id: str) -> str | None:
        return self._errors.pop((stream, entry_id), None)


@dataclass
class _Counts:
    claimed: int = 0
    rerun: int = 0
    dead: int = 0
    deleted: int = 0

    def frozen(self) -> ReclaimStats:
        return ReclaimStats(self.claimed, self.rerun, self.dead, self.deleted)


class _LogContext(TypedDict):
    """The fields every log record of a reclaimer carries."""

    group: str
    consumer: str


# --- the runner ---------------------------------------------------------------------------------


class Reclaimer:
    """Reclaims the pending entries of one consumer group over a set of camera streams."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        names: StreamNames,
        *,
        group: str,
        streams: Iterable[str],
        config: ReclaimConfig,
        consumer: str,
        handler: BatchHandler,
        clock: Callable[[], datetime] = utc_now,
        telemetry: StageTelemetry | None = None,
        positions: GroupPositions | None = None,
    ) -> None:
        self._redis = redis
        self._telemetry = telemetry
        self._names = names
        self._group = str(group)
        self._config = config
        self._consumer = consumer
        self._context = _LogContext(group=self._group, consumer=consumer)
        self._handler = handler
        self._clock = clock
        self._rand: Callable[[], float] = random.random
        self._cameras: dict[str, str] = {}
        self._errors = _LastErrors(config.max_remembered_errors)
        # Where the group stands on each stream, to recreate it there when it is lost.
        self.positions = positions or GroupPositions(redis, self._group)
        for stream in streams:
            self.add_stream(stream)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def add_stream(self, stream: str) -> None:
        """Reclaim on one more camera stream too (a new camera); a no-op when already there."""
        camera, _ = self._names.parse(stream)
        self._cameras.setdefault(stream, camera)

    def record_failures(self, stream: str, failures: Mapping[str, str]) -> None:
        """Remember errors the stage met on fresh deliveries, for the dead letters."""
        for entry_id, error in failures.items():
            self._errors.set(stream, entry_id, error)

    # --- loop -----------------------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event) -> None:
        """Reclaim every `interval_seconds` until `stop_event` is set.

        A Redis outage is logged and retried with backoff; a deleted group is recreated by
        `run_once`; any other failure of a round is logged and the loop carries on.
        """
        log_event(
            logger,
            "reclaim.started",
            **self._context,
            streams=len(self._cameras),
        )
        failures = 0
        while not stop_event.is_set():
            delay = self._config.interval_seconds
            try:
                stats = await self.run_once()
            except Exception as exc:
                delay = backoff_delay(
                    failures,
                    self._config.backoff_base_seconds,
                    self._config.backoff_cap_seconds,
                    self._rand(),
                )
                failures += 1
                outage = isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)
                log_event(
                    logger,
                    "reclaim.redis_unavailable" if outage else "reclaim.round_failed",
                    level=logging.WARNING if outage else logging.ERROR,
                    **self._context,
                    exc_info=not outage,
                    error=error_text(exc),
                    attempt=failures,
                    retry_in_seconds=round(delay, 3),
                )
            else:
                failures = 0
                if stats.claimed or stats.deleted:
                    log_event(
                        logger,
                        "reclaim.round",
                        **self._context,
                        **asdict(stats),
                    )
            if await _wait(stop_event, delay):
                break
        log_event(logger, "reclaim.stopped", **self._context)

    async def run_once(self) -> ReclaimStats:
        """One pass over every stream; Redis connection errors propagate to the caller."""
        counts = _Counts()
        for stream in list(self._cameras):
            try:
                await self.positions.refresh(stream)
                await self._reclaim_stream(stream, counts)
            except ResponseError as exc:
                if is_missing_group_error(exc):
                    await self._recreate_group(stream)
                    continue
                log_event(
                    logger,
                    "reclaim.stream_failed",
                    level=logging.ERROR,
                    **self._context,
                    stream=stream,
                    error=error_text(exc),
                )
        return counts.frozen()

    async def _recreate_group(self, stream: str) -> None:
        recreated = await self.positions.recreate(stream)
        log_event(
            logger,
            "reclaim.group_recreated",
            level=logging.WARNING,
            **self._context,
            stream=stream,
            start_id=recreated.start_id,
            restored=recreated.restored,
            group_created=recreated.created,
        )

    # --- one stream -----------------------------------------------------------------------------

    async def _reclaim_stream(self, stream: str, counts: _Counts) -> None:
        cursor = _CURSOR_DONE
        touched = False
        while True:
            reply: Any = await self._redis.xautoclaim(
                stream,
                self._group,
                self._consumer,
                self._config.idle_ms,
                start_id=cursor,
                count=self._config.batch_size,
            )
            cursor = reply_text(reply[0])
            claimed: list[StreamEntry] = [
                (reply_text(entry_id), fields)
                for entry_id, fields in reply[1]
                if entry_id is not None and fields is not None
            ]
            deleted = [reply_text(entry_id) for entry_id in (reply[2] if len(reply) > 2 else [])]
            if deleted:
                await self._bury_deleted(stream, deleted, counts)
            if claimed:
                await self._handle_claimed(stream, claimed, counts)
            touched = touched or bool(claimed or deleted)
            if cursor == _CURSOR_DONE:
                if touched:  # what was re-run or buried moved the group on
                    await self.positions.refresh(stream)
                return

    async def _bury_deleted(self, stream: str, entry_ids: list[str], counts: _Counts) -> None:
        burials = []
        for entry_id in entry_ids:
            self._errors.pop(stream, entry_id)
            burials.append(Burial(entry_id, deliveries=0, last_error=ERROR_DELETED, data=None))
        await self._bury(stream, burials)
        counts.deleted += len(burials)

    async def _handle_claimed(
        self, stream: str, claimed: list[StreamEntry], counts: _Counts
    ) -> None:
        counts.claimed += len(claimed)
        delivered = await self._delivery_counts(stream, [entry_id for entry_id, _ in claimed])
        # Entries missing from `delivered` were taken over or acked meanwhile: not ours any more.
        rerun_ids, dead_ids = classify_pending(delivered, self._config.max_deliveries)
        fields = dict(claimed)
        if dead_ids:
            burials = [
                Burial(
                    entry_id,
                    deliveries=deliveries_made(delivered[entry_id]),
                    last_error=self._errors.pop(stream, entry_id) or ERROR_MAX_DELIVERIES,
                    data=fields[entry_id].get(DATA_FIELD),
                )
                for entry_id in dead_ids
            ]
            await self._bury(stream, burials)
            counts.dead += len(burials)
        if rerun_ids:
            await self._rerun(stream, [(entry_id, fields[entry_id]) for entry_id in rerun_ids])
            counts.rerun += len(rerun_ids)

    async def _delivery_counts(self, stream: str, entry_ids: Sequence[str]) -> dict[str, int]:
        """Times delivered of the given ids still pending for this consumer (one XPENDING page
        covering them, more only when this consumer holds other entries in between)."""
        wanted = set(entry_ids)
        found: dict[str, int] = {}
        low, high = min(entry_ids, key=id_key), max(entry_ids, key=id_key)
        page = 2 * max(len(entry_ids), self._config.batch_size)
        while True:
            rows: Any = await self._redis.xpending_range(
                stream, self._group, low, high, page, consumername=self._consumer
            )
            for row in rows:
                entry_id = reply_text(row["message_id"])
                if entry_id in wanted:
                    found[entry_id] = int(row["times_delivered"])
            if len(rows) < page or len(found) == len(wanted):
                break
            low = "(" + reply_text(rows[-1]["message_id"])
        return {entry_id: found[entry_id] for entry_id in entry_ids if entry_id in found}

    async def _bury(self, stream: str, burials: list[Burial]) -> None:
        camera = self._cameras[stream]
        dead_ids = await bury(
            self._redis,
            dead_stream=self._names.dead(camera),
            camera=camera,
            stream=stream,
            group=self._group,
            burials=burials,
            now=self._clock(),
        )
        record_dead(
            resolve(self._telemetry),
            camera=camera,
            stream=stream,
            group=self._group,
            burials=burials,
        )
        for burial, dead_id in zip(burials, dead_ids, strict=True):
            log_event(
                logger,
                "reclaim.dead",
                level=logging.WARNING,
                **self._context,
                camera=camera,
                stream=stream,
                entry_id=burial.entry_id,
                dead_id=dead_id,
                deliveries=burial.deliveries,
                last_error=burial.last_error,
                deleted=burial.data is None,
            )

    async def _rerun(self, stream: str, entries: list[StreamEntry]) -> None:
        try:
            result = await self._handler(stream, entries)
        except Exception as exc:
            if len(entries) == 1:
                self._handler_failed(stream, entries[0][0], exc)
                return
            log_event(
                logger,
                "reclaim.batch_failed",
                level=logging.WARNING,
                **self._context,
                stream=stream,
                entries=len(entries),
                error=error_text(exc),
            )
            for entry in entries:
                try:
                    single = await self._handler(stream, [entry])
                except Exception as entry_exc:
                    self._handler_failed(stream, entry[0], entry_exc)
                else:
                    self._remember(stream, [entry], single)
            return
        self._remember(stream, entries, result)

    def _handler_failed(self, stream: str, entry_id: str, exc: Exception) -> None:
        self._entry_failed(stream, entry_id, error_text(exc))

    def _entry_failed(self, stream: str, entry_id: str, error: str) -> None:
        self._errors.set(stream, entry_id, error)
        log_event(
            logger,
            "reclaim.entry_failed",
            level=logging.WARNING,
            **self._context,
            stream=stream,
            entry_id=entry_id,
            error=error,
        )

    def _remember(self, stream: str, entries: list[StreamEntry], result: HandlerResult) -> None:
        for entry_id, _ in entries:
            error = result.failed.get(entry_id)
            if error is None:
                self._errors.pop(stream, entry_id)
            else:
                self._entry_failed(stream, entry_id, error)


async def _wait(stop_event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, waking early when `stop_event` is set; True when it is set."""
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except TimeoutError:
        return stop_event.is_set()
    return True

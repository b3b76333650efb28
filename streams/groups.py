"""Consumer groups: created by HSI itself, from the start of the stream, and recreated when lost.

Groups are made with `XGROUP CREATE key group 0 MKSTREAM` and an existing group (BUSYGROUP) is left
as it is. FastStream is never asked to create them: with `last_id="0"` on an existing group it spins
on the group's own pending entries.

A group can be lost while HSI runs: `XGROUP DESTROY`, the stream deleted, the server flushed. A
stage or reclaimer that meets the loss (NOGROUP) recreates the group where it last saw it
(`GroupPositions`), not at `$` (entries added meanwhile would never be read) nor at `0` (every
entry still on the stream would be run again, and a stage's outputs written twice):

- at the group's last delivered id, with its pending entries put back into the pending list as
  they were (same consumer, same delivery count: `XCLAIM … RETRYCOUNT n FORCE JUSTID`), so the
  reclaimer still re-runs or buries them;
- with more than `MAX_RESTORED` pending entries, just before the oldest of them instead: those are
  delivered anew, with the acknowledged entries after them;
- from 0 before the group was ever seen, and when the stream holds no entry up to where the group
  was (the stream was deleted or flushed: whatever is on it now is new).

Positions are read with every batch a stage handles and at every reclaim round: the script that
commits a batch (its XACKs) returns where the group then stands (`POSITION_LUA`), and a batch
committed otherwise has the position read after it. Entries the group had acknowledged are run
again only when they were acknowledged after the position was last read (a batch in flight at the
loss, whose XACK found no group; or, when the reclaimer recreates the group first, what was
acknowledged since its last round). Entry ids grow with time; a stream that
was deleted gets ids above the old position again, so its new entries are never skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError
from redis.typing import StreamIdT

from streams.replies import id_key, reply_text

GROUP_START_ID = "0"
# At most this many pending entries are put back when a group is recreated; with more, they are
# delivered again instead (read with one XPENDING call after every batch, so kept small).
MAX_RESTORED: Final = 100
_MAX_SEQUENCE: Final = 2**64 - 1


def is_missing_group_error(exc: BaseException) -> bool:
    """Whether `exc` is Redis saying the stream or its consumer group does not exist (NOGROUP)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def is_existing_group_error(exc: BaseException) -> bool:
    """Whether `exc` is Redis saying the consumer group already exists (BUSYGROUP)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSYGROUP")


async def ensure_group(redis: Redis | RedisCluster, stream: str, group: str) -> bool:
    """Create `group` on `stream` from its first entry (creating the stream too).

    Returns True when the group was created, False when it already existed.
    """
    try:
        await redis.xgroup_create(stream, group, id=GROUP_START_ID, mkstream=True)
    except ResponseError as exc:
        if is_existing_group_error(exc):
            return False
        raise
    return True


# --- where a group stands -----------------------------------------------------------------------


def previous_id(entry_id: str) -> str:
    """The greatest stream id smaller than `entry_id` (`"0-0"` stays `"0-0"`)."""
    ms, seq = id_key(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{_MAX_SEQUENCE}"
    return "0-0"


@dataclass(frozen=True)
class PendingEntry:
    """An entry delivered to a consumer of the group and not acknowledged yet."""

    entry_id: str
    consumer: str
    deliveries: int


@dataclass(frozen=True)
class GroupStart:
    """Where to recreate a group: the id it has delivered up to, and the pending entries to put
    back (every one of them, or none when it had more than `MAX_RESTORED`: the id is then
    just before the oldest, so that they are delivered again)."""

    last_delivered_id: str
    pending: tuple[PendingEntry, ...] = ()


def start_of(
    last_delivered_id: str,
    pending: Sequence[PendingEntry] | None,
    oldest_pending_id: str | None = None,
) -> GroupStart:
    """Where to recreate a group seen with this last delivered id and these pending entries
    (`pending`: all of them; None when there were too many to read, and then
    `oldest_pending_id` is the oldest). A pending entry after the last delivered id (delivered
    while the position was being read) is not put back: the recreated group delivers it anyway."""
    if pending is not None:
        last = id_key(last_delivered_id)
        kept = tuple(p for p in pending if id_key(p.entry_id) <= last)
        return GroupStart(last_delivered_id, kept)
    if oldest_pending_id is None:
        return GroupStart(last_delivered_id)
    return GroupStart(previous_id(oldest_pending_id))


async def group_start(
    redis: Redis | RedisCluster, stream: str, group: str, *, max_restored: int = MAX_RESTORED
) -> GroupStart | None:
    """Where `group` stands on `stream` now (XINFO GROUPS, then XPENDING when it has pending
    entries); None when the stream or the group does not exist."""
    try:
        infos: Any = await redis.xinfo_groups(stream)
        info = next((i for i in infos if reply_text(i["name"]) == group), None)
        if info is None:
            return None
        last_delivered = reply_text(info["last-delivered-id"])
        count = int(info["pending"])
        if count == 0:
            return GroupStart(last_delivered)
        if count <= max_restored:
            rows: Any = await redis.xpending_range(stream, group, "-", "+", max_restored + 1)
            if len(rows) <= max_restored:
                pending = [
                    PendingEntry(
                        reply_text(row["message_id"]),
                        reply_text(row["consumer"]),
                        int(row["times_delivered"]),
                    )
                    for row in rows
                ]
                return start_of(last_delivered, pending)
        summary: Any = await redis.xpending(stream, group)
        oldest = summary.get("min") if summary.get("pending") else None
        return start_of(last_delivered, None, None if oldest is None else reply_text(oldest))
    except ResponseError as exc:
        if is_missing_group_error(exc) or "no such key" in str(exc).lower():
            return None
        raise


# A Lua function for scripts that acknowledge entries: where `group` stands on `key` once the
# script's own XACKs are done, in the reply `position_of` reads, so that a stage learns it with
# its commit instead of by a round trip of its own. {last delivered id, pending count, and the
# pending entries as XPENDING lists them when there are 1 to MAX_RESTORED of them, or else the
# oldest pending id}; false when the stream or the group does not exist.
POSITION_LUA = f"""
local function position(key, group)
  local infos = redis.pcall('XINFO', 'GROUPS', key)
  if type(infos) ~= 'table' or infos.err then return false end
  for _, info in ipairs(infos) do
    local name, last
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'last-delivered-id' then last = info[i + 1] end
    end
    if name == group then
      local summary = redis.call('XPENDING', key, group)
      local count = summary[1]
      if count == 0 then return {{last, 0}} end
      if count <= {MAX_RESTORED} then
        return {{last, count, redis.call('XPENDING', key, group, '-', '+', {MAX_RESTORED})}}
      end
      return {{last, count, false, summary[2]}}
    end
  end
  return false
end
"""


def position_of(reply: Any) -> GroupStart | None:
    """The `GroupStart` of a `POSITION_LUA` reply (as `group_start` reads it); None when the
    group did not exist."""
    if not reply:
        return None
    last_delivered = reply_text(reply[0])
    if int(reply[1]) == 0:
        return GroupStart(last_delivered)
    rows = reply[2] if len(reply) > 2 else None
    if rows:
        pending = [
            PendingEntry(reply_text(entry_id), reply_text(consumer), int(deliveries))
            for entry_id, consumer, _, deliveries in rows
        ]
        return start_of(last_delivered, pending)
    oldest = reply[3] if len(reply) > 3 else None
    return start_of(last_delivered, None, None if oldest is None else reply_text(oldest))


@dataclass(frozen=True)
class Recreated:
    """A group recreation: whether this call made it (False: someone else did first), the id it
    was made at, and how many pending entries were put back."""

    created: bool
    start_id: str
    restored: int = 0


class GroupPositions:
    """Where one consumer group was last seen on each of its streams, to recreate it there
    when it is lost (see the module doc)."""

    def __init__(self, redis: Redis | RedisCluster, group: str) -> None:
        self._redis = redis
        self.group = str(group)
        self._starts: dict[str, GroupStart] = {}
        # Per stream, how many positions scripts have told (`remember`): a read that a script's
        # position overtook while it was in flight is not kept (it may have run before it).
        self._told: dict[str, int] = {}

    def get(self, stream: str) -> GroupStart | None:
        """The position last seen on `stream`; None before it was ever seen."""
        return self._starts.get(stream)

    def remember(self, stream: str, start: GroupStart | None) -> None:
        """Keep `start` as the group's position on `stream`: read by a script that acknowledged
        entries of it (`POSITION_LUA`); None (no group) keeps the last position seen."""
        if start is not None:
            self._starts[stream] = start
            self._told[stream] = self._told.get(stream, 0) + 1

    async def refresh(self, stream: str) -> GroupStart | None:
        """Read the group's position on `stream` and remember it, unless a script told one
        meanwhile; while the group is missing, the last position seen is kept (and returned)."""
        told = self._told.get(stream, 0)
        start = await group_start(self._redis, stream, self.group)
        if start is not None and self._told.get(stream, 0) == told:
            self._starts[stream] = start
        return self._starts.get(stream)

    async def _holds(self, stream: str, entry_id: str) -> bool:
        """Whether `stream` still holds an entry up to `entry_id`. When it holds none (it was
        deleted, or trimmed past that id), starting from 0 delivers the same entries, and also
        any entry added since with a smaller id."""
        first: Any = await self._redis.xrange(stream, "-", entry_id, count=1)
        return bool(first)

    async def recreate(self, stream: str) -> Recreated:
        """Create the group again on `stream` where it was last seen (from 0 when the group was
        never seen, or the stream holds nothing up to that point) and put its pending entries
        back."""
        start = self._starts.get(stream)
        if start is None or not await self._holds(stream, start.last_delivered_id):
            start = GroupStart(GROUP_START_ID)
        try:
            await self._redis.xgroup_create(
                stream, self.group, id=start.last_delivered_id, mkstream=True
            )
        except ResponseError as exc:
            if is_existing_group_error(exc):
                return Recreated(False, start.last_delivered_id)
            raise
        owners: dict[tuple[str, int], list[StreamIdT]] = {}
        for entry in start.pending:
            owners.setdefault((entry.consumer, entry.deliveries), []).append(entry.entry_id)
        restored = 0
        for (consumer, deliveries), entry_ids in owners.items():
            # FORCE makes the pending entries again (one no longer on the stream is ignored);
            # JUSTID with RETRYCOUNT keeps the delivery count they had, for `max_deliveries`.
            claimed: Any = await self._redis.xclaim(
                stream,
                self.group,
                consumer,
                0,
                entry_ids,
                retrycount=deliveries,
                force=True,
                justid=True,
            )
            restored += len(claimed)
        self._starts[stream] = start
        return Recreated(True, start.last_delivered_id, restored)

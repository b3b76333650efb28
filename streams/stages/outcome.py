"""Writing a stage's outputs and acknowledging its inputs atomically, once per input.

Every key a stage writes for one camera shares the camera's `{cam}` hash tag with the stream it
read, so the output XADDs and the XACK of the inputs run as one script in one slot: either the
outputs exist and the inputs are acknowledged, or neither. A crash before the commit leaves the
inputs pending, and the reclaimer runs them again.

Each output names the input it derives from, and is written only when the XACK of that input
acknowledges it, inside the same script. An entry can be handled twice at once: the reclaimer
claims an entry that a live but slow consumer still works on (idle longer than the reclaim idle
time: a slow detector, a long LLM answer, a stalled process). Both finish; the first commit
acknowledges the entry and writes its outputs, the second finds it acknowledged already and
writes nothing (`commit.duplicate_skipped`). A plain MULTI could not tell: XACK of an entry
acknowledged already is no error, and the outputs would be written twice.

`transaction()` is the one way HSI opens a MULTI (and WATCH), on one server or on Redis Cluster.
On a cluster redis-py sends the transaction to the node owning its slot and refuses keys of two
slots (`CrossSlotTransactionError`). Its cluster transaction works out each queued command's slot
on a helper thread with an event loop of its own, which would also rediscover the cluster's
topology there when the client needs it (first use, after a failover): `transaction()` has the
client discover it on the caller's loop first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from streams import trusted
from streams.envelope import entry_fields_and_headers
from streams.groups import POSITION_LUA, GroupStart, position_of
from streams.replies import reply_text
from streams.schemas import Entry

logger = logging.getLogger("hsi.stages")

# KEYS[1]: the input stream; KEYS[2..]: the output streams, one per output.
# ARGV[1]: the group; ARGV[2]: the number n of inputs; ARGV[3..2+n]: their ids; then, per output,
# the index of its input (1-based), the number of its field/value items, and the items.
# Returns the new entry id of each output, or false for an output not written, and where the
# group stands on the input stream after the XACKs (`streams.groups.POSITION_LUA`).
_COMMIT = (
    POSITION_LUA
    + """
local group = ARGV[1]
local n = tonumber(ARGV[2])
local acked = {}
for i = 1, n do
  acked[i] = redis.call('XACK', KEYS[1], group, ARGV[2 + i]) == 1
end
local ids = {}
local at = 3 + n
for k = 2, #KEYS do
  local source = tonumber(ARGV[at])
  local count = tonumber(ARGV[at + 1])
  if acked[source] then
    local items = {}
    for j = 1, count do
      items[j] = ARGV[at + 1 + j]
    end
    ids[k - 1] = redis.call('XADD', KEYS[k], '*', unpack(items))
  else
    ids[k - 1] = false
  end
  at = at + 2 + count
end
return {ids, position(KEYS[1], group)}
"""
)
_SCRIPT = AsyncScript(None, _COMMIT.encode())  # type: ignore[arg-type]  # bytes: no client needed


@dataclass
class Outcome:
    """What a stage did with one batch of entries from one stream."""

    # (stream, entry, headers, the id of the input entry it derives from)
    outputs: list[tuple[str, Entry, Mapping[str, str], str]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # entry ids to acknowledge
    failed: dict[str, str] = field(default_factory=dict)  # entry id → error; left pending
    # Where the group stood on the input stream once the commit was done, when it read it.
    position: GroupStart | None = None

    def emit(
        self, stream: str, entry: Entry, headers: Mapping[str, str] | None, *, source: str
    ) -> None:
        """Write `entry` to `stream` when `source` (an entry of `done`) is acknowledged."""
        self.outputs.append((stream, entry, headers or {}, source))


async def commit(
    redis: Redis | RedisCluster, stream: str, group: str, outcome: Outcome
) -> list[str | None]:
    """XACK the done entries and XADD the outputs of those this call acknowledged, atomically;
    the new entry id of each output, None for one not written (its input was acknowledged
    already, by another consumer that handled it too). The group's position after the XACKs is
    left in `outcome.position`."""
    if not outcome.outputs and not outcome.done:
        return []
    index = {entry_id: number for number, entry_id in enumerate(outcome.done, start=1)}
    keys = [stream]
    args: list[Any] = [group, len(outcome.done), *outcome.done]
    written: list[dict[str, str]] = []
    for target, entry, headers, source in outcome.outputs:
        if source not in index:
            raise ValueError(f"output of {source!r}, which is not acknowledged with it")
        fields, full = entry_fields_and_headers(entry, headers)
        written.append(full)
        items = [item for pair in fields.items() for item in pair]
        keys.append(target)
        args += [index[source], len(items), *items]
    results, position = await _SCRIPT(keys, args, client=redis)
    outcome.position = position_of(position)
    ids = [None if r is None else reply_text(r) for r in results]
    for (target, entry, _, _), full, entry_id in zip(outcome.outputs, written, ids, strict=True):
        if entry_id is not None:  # handed to this process's readers without decoding it
            trusted.remember(target, entry_id, entry, full)
    skipped = sum(1 for r in ids if r is None)
    if skipped:
        logger.info(
            "commit.duplicate_skipped",
            extra={"stream": stream, "group": group, "outputs": skipped},
        )
    return ids

"""Writing a stage's outputs and acknowledging its inputs in one MULTI.

Every key a stage writes for one camera shares the camera's `{cam}` hash tag with the stream it
read, so the output XADDs and the XACK of the inputs run as one transaction in one slot: either
the outputs exist and the inputs are acknowledged, or neither. A crash before the MULTI leaves
the inputs pending, and the reclaimer runs them again.

`transaction()` is the one way HSI opens a MULTI (and WATCH), on one server or on Redis Cluster.
On a cluster redis-py sends the transaction to the node owning its slot and refuses keys of two
slots (`CrossSlotTransactionError`). Its cluster transaction works out each queued command's slot
on a helper thread with an event loop of its own, which would also rediscover the cluster's
topology there when the client needs it (first use, after a failover): `transaction()` has the
client discover it on the caller's loop first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis, RedisCluster

from streams.envelope import entry_fields
from streams.schemas import Entry
from streams.transactions import transaction


@dataclass
class Outcome:
    """What a stage did with one batch of entries from one stream."""

    outputs: list[tuple[str, Entry, Mapping[str, str]]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # entry ids to acknowledge
    failed: dict[str, str] = field(default_factory=dict)  # entry id → error; left pending

    def emit(self, stream: str, entry: Entry, headers: Mapping[str, str] | None = None) -> None:
        self.outputs.append((stream, entry, headers or {}))


async def commit(
    redis: Redis | RedisCluster, stream: str, group: str, outcome: Outcome
) -> list[str]:
    """XADD the outputs and XACK the done entries atomically; return the new entry ids."""
    if not outcome.outputs and not outcome.done:
        return []
    async with transaction(redis) as pipe:
        for target, entry, headers in outcome.outputs:
            pipe.xadd(target, entry_fields(entry, headers))  # type: ignore[arg-type]
        if outcome.done:
            pipe.xack(stream, group, *outcome.done)
        results = await pipe.execute()
    return [_text(r) for r in results[: len(outcome.outputs)]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

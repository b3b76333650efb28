"""Writing a stage's outputs and acknowledging its inputs in one MULTI.

Every key a stage writes for one camera shares the camera's `{cam}` hash tag with the stream it
read, so the output XADDs and the XACK of the inputs run as one transaction in one slot: either
the outputs exist and the inputs are acknowledged, or neither. A crash before the MULTI leaves
the inputs pending, and the reclaimer runs them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis

from streams.envelope import entry_fields
from streams.schemas import Entry


@dataclass
class Outcome:
    """What a stage did with one batch of entries from one stream."""

    outputs: list[tuple[str, Entry, Mapping[str, str]]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # entry ids to acknowledge
    failed: dict[str, str] = field(default_factory=dict)  # entry id → error; left pending

    def emit(self, stream: str, entry: Entry, headers: Mapping[str, str] | None = None) -> None:
        self.outputs.append((stream, entry, headers or {}))


async def commit(redis: Redis, stream: str, group: str, outcome: Outcome) -> list[str]:
    """XADD the outputs and XACK the done entries atomically; return the new entry ids."""
    if not outcome.outputs and not outcome.done:
        return []
    async with redis.pipeline(transaction=True) as pipe:
        for target, entry, headers in outcome.outputs:
            pipe.xadd(target, entry_fields(entry, headers))  # type: ignore[arg-type]
        if outcome.done:
            pipe.xack(stream, group, *outcome.done)
        results = await pipe.execute()
    return [_text(r) for r in results[: len(outcome.outputs)]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The stage contract: what a consumer group's batch handler is given and what it reports.

Every stage (detect, batch, analyze, notify) and the projector is a `BatchHandler`: it gets the
entries of one stream as XREADGROUP or XAUTOCLAIM returned them, writes its outputs, XACKs the
entries it processed and reports the others in `HandlerResult.failed`. The stage runtime
(`streams.stages.runtime`) hands it fresh deliveries, the reclaimer (`streams.reclaim`) the
entries that stayed pending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from streams.dlq import MAX_ERROR_CHARS
from streams.groups import GroupStart

EntryFields = dict[bytes, bytes]
StreamEntry = tuple[str, EntryFields]  # (entry id, fields)


@dataclass(frozen=True)
class HandlerResult:
    """What a batch handler reports: the entries it could not process, with their error text.

    Failed entries stay pending (the handler did not XACK them); the reclaimer remembers the error
    so a dead letter can say why. Entries not listed were processed (and XACKed by the handler).
    """

    failed: Mapping[str, str] = field(default_factory=dict)
    # Where the group stood on the stream once the handler's commit acknowledged its entries, when
    # the commit read it (`streams.groups.POSITION_LUA`); None: not read.
    position: GroupStart | None = None


# The stage's batch handler: (stream key, entries) → result. It writes the outputs and XACKs the
# entries it processed; it may raise, which counts as a failure of every entry it was given.
BatchHandler = Callable[[str, list[StreamEntry]], Awaitable[HandlerResult]]


def error_text(exc: BaseException) -> str:
    """`TypeName: message`, cut to a size a dead letter can carry."""
    detail = str(exc)
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text[:MAX_ERROR_CHARS]

"""Structured log records: a stable event name as the message, the fields apart.

`log_event(logger, "reclaim.dead", level=logging.WARNING, camera=camera, entry_id=entry_id)`
logs the record `reclaim.dead` with the event name under `hsi_event` and the fields under
`hsi_fields` (`event_extra`), which HSI's formatters render as `key=value` pairs or JSON keys.
It is the one helper for this in every package: `streams` and `projections` call it directly,
and `hsi.logs.setup` re-exports it (with its `EventLogger`, which it accepts too).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, TypeAlias

ExcInfo: TypeAlias = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)


class WrapsLogger(Protocol):
    """A logger of HSI's own that wraps a standard one (`hsi.logs.setup.EventLogger`)."""

    @property
    def logger(self) -> logging.Logger: ...


def event_extra(event: str, fields: Mapping[str, object]) -> dict[str, object]:
    """The `extra` of a record of `event` with `fields`."""
    return {"hsi_event": event, "hsi_fields": fields}


def log_event(
    logger: logging.Logger | WrapsLogger,
    event: str,
    /,
    *,
    level: int = logging.INFO,
    exc_info: ExcInfo = None,
    **fields: object,
) -> None:
    """Log the stable `event` name with structured `fields` (the record names the caller)."""
    target = logger if isinstance(logger, logging.Logger) else logger.logger
    if target.isEnabledFor(level):
        target.log(level, event, exc_info=exc_info, stacklevel=2, extra=event_extra(event, fields))

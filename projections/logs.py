"""Structured log records of the read side: a stable event name as message, fields apart."""

from __future__ import annotations

import logging


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, stacklevel=2, extra={"hsi_event": event, "hsi_fields": fields})

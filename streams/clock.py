"""The wall clock: the default `clock` of the stages, the reclaimer and the projector.

Decisions take the time as an argument; the components that run them read it here unless a test
hands them a clock of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, as an aware datetime in UTC."""
    return datetime.now(UTC)


def epoch_now() -> float:
    """Now, in epoch seconds."""
    return utc_now().timestamp()

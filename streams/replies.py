"""Reading redis-py replies: text that may come as bytes, and stream entry ids in order."""

from __future__ import annotations


def reply_text(value: bytes | str) -> str:
    """A reply value as text (redis-py returns bytes unless the client decodes responses)."""
    return value.decode() if isinstance(value, bytes) else value


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a pair of numbers, for ordering ids (`"7"` is `(7, 0)`)."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)

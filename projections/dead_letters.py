"""Dead letters that leave their stream: `hsi dlq retry` and `drop` delete the `entry.dead`
(XDEL), which the projector cannot see. The command calls `forget_dead_letter` after the
deletion, so the live projection matches a rebuild of the streams (which no longer hold it).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.names import StreamNames


async def forget_dead_letter(
    engine: AsyncEngine, names: StreamNames, camera: str, dead_entry_id: str
) -> bool:
    """Delete a dead letter's row and its tracking rows; True when there was a row."""
    async with engine.begin() as conn:
        removed = await conn.execute(
            text(
                "DELETE FROM dead_letters WHERE camera_id = :camera "
                "AND dead_entry_id = :entry_id RETURNING 1"
            ),
            {"camera": camera, "entry_id": dead_entry_id},
        )
        found = removed.first() is not None
        await conn.execute(
            text(
                "DELETE FROM projection_checkpoints WHERE stream = :stream AND entry_id = :entry_id"
            ),
            {"stream": names.dead(camera), "entry_id": dead_entry_id},
        )
    return found

"""Waiting on a condition: tests never sleep a fixed time and never assert how long things took."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

WITHIN = 60.0
"""Seconds before a wait fails: generous, so that only a condition that never holds fails."""


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = WITHIN
) -> None:
    """Poll `condition` (plain or async) until it holds; fail naming `what` after `within` s."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None

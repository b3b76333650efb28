"""What the lifespan makes and hands to every request (Starlette lifespan state)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from hsi.api.config import APIConfig
from hsi.api.security import ConnectionSlots
from hsi.infra.redis import RedisClient
from streams.names import StreamNames

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class Resources:
    config: APIConfig
    engine: AsyncEngine
    redis: RedisClient  # the shared pool: short commands only, never a blocking read
    names: StreamNames
    live_slots: ConnectionSlots
    openapi: Mapping[str, Any]
    # Thumbnail renders at once (each decodes a full picture in a worker thread): a burst of
    # requests for uncached thumbnails waits here instead of filling memory and the CPU.
    thumbnail_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


def resources(request: Request) -> Resources:
    found = request.state.resources
    assert isinstance(found, Resources)
    return found

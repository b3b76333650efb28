"""What the lifespan makes and hands to every request (Starlette lifespan state)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


def resources(request: Request) -> Resources:
    found = request.state.resources
    assert isinstance(found, Resources)
    return found

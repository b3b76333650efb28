"""One place that opens a Redis transaction, for standalone Redis and Redis Cluster alike."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline


@contextlib.asynccontextmanager
async def transaction(
    redis: Redis | RedisCluster,
) -> AsyncIterator[Pipeline | ClusterPipeline]:
    """A `pipeline(transaction=True)`: commands queued, then one MULTI/EXEC (WATCH allowed
    before `multi()`). All its keys must share one slot: on a cluster that is the rule, on
    one server HSI keeps it so that the code is the same for both."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # a no-op once the slot map is known
    async with redis.pipeline(transaction=True) as pipe:
        yield pipe

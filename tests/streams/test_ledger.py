"""`Ledger.publish_once` under load: concurrent calls go out as one pipeline, each still once.

On a real Redis (and the loopback cluster): many files published at once, duplicates among
them, come back each with its own reply, exactly one entry per content hash; the entries a
process wrote are handed to its readers as written (`streams.trusted`); a connection that fails
fails every caller waiting on it, and a retry writes each file once.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from streams import trusted
from streams.envelope import read_fields
from streams.names import StreamNames
from streams.watch.ledger import PIPELINE_MAX, Ledger
from tests.projections.builders import file_observed

TTL = 3600


async def _publish_many(client: Redis | RedisCluster, names: StreamNames) -> None:
    ledger = Ledger(client, names, TTL)
    cameras = ["front", "back", "side"]
    # More than one pipeline's worth, every content published twice (two uploads of one file).
    entries = [file_observed(n, cameras[n % 3]) for n in range(PIPELINE_MAX + 50)]
    calls = [ledger.publish_once(e, {"traceparent": f"00-{n + 1:032x}-{1:016x}-01"})
             for n, e in enumerate(entries)]  # fmt: skip
    calls += [ledger.publish_once(e) for e in entries]
    results = await asyncio.gather(*calls)
    first, second = results[: len(entries)], results[len(entries) :]
    # Of each pair exactly one wrote the entry, and both name the same id.
    for a, b in zip(first, second, strict=True):
        assert a.new != b.new
        assert a.entry_id == b.entry_id
    for camera in cameras:
        stream = names.files(camera)
        written = await client.xrange(stream)
        expected = [e for e in entries if e.camera_id == camera]
        assert len(written) == len(expected)
        by_id = {r.entry_id: e for r, e in zip(first, entries, strict=True) if e in expected}
        for raw_id, fields in written:
            entry_id = raw_id.decode()
            remembered = trusted.recall(stream, entry_id)
            assert remembered is not None
            decoded, headers = read_fields(fields)
            assert remembered[0] == decoded == by_id[entry_id]
            assert remembered[1] == headers


async def test_concurrent_publishes_write_each_content_once(
    redis_client: Redis, key_prefix: str
) -> None:
    await _publish_many(redis_client, StreamNames(key_prefix))


async def test_concurrent_publishes_write_each_content_once_on_a_cluster(
    cluster_url: str, key_prefix: str
) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        await _publish_many(client, StreamNames(key_prefix))
    finally:
        await client.aclose()


async def test_an_unreachable_redis_fails_every_waiting_caller(
    redis_client: Redis, key_prefix: str, unused_tcp_port: int
) -> None:
    """Every caller whose call was in the failed pipeline gets the connection error (none
    waits forever), and publishing the same files again once Redis answers writes each once."""
    names = StreamNames(key_prefix)
    entries = [file_observed(n, "front") for n in range(40)]
    down = Redis(host="127.0.0.1", port=unused_tcp_port, socket_connect_timeout=1)
    try:
        ledger = Ledger(down, names, TTL)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(ledger.publish_once(e) for e in entries), return_exceptions=True),
            timeout=60,
        )
    finally:
        await down.aclose()
    assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes[:3]
    ledger = Ledger(redis_client, names, TTL)
    retried = await asyncio.gather(*(ledger.publish_once(e) for e in entries))
    again = await asyncio.gather(*(ledger.publish_once(e) for e in entries))
    assert all(r.new for r in retried)
    assert not any(r.new for r in again)
    assert [r.entry_id for r in again] == [r.entry_id for r in retried]
    assert await redis_client.xlen(names.files("front")) == len(entries)

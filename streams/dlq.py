"""Dead letters: how they are written, and the operations behind `hsi dlq list|show|retry|drop`.

A dead letter is an `entry.dead` on a camera's dead stream, written by the reclaimer (`dead_entry`,
`dead_fields`) with the original `__data__` field in base64. Retry puts
the original envelope back on its source stream, with a `retry_of` header naming the entry it
replaces, and deletes the dead letter, both in one MULTI: the source stream and the dead stream
carry the same camera hash tag, so they share a slot. The consumer group then delivers the copy
as a new entry.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from streams.envelope import (
    DATA_FIELD,
    HEADER_RETRY_OF,
    HEADER_TRACEPARENT,
    decode,
    encode,
    entry_fields,
    read_fields,
)
from streams.logs import log_event
from streams.names import StreamNames
from streams.replies import id_key, reply_text
from streams.schemas import Entry, EntryDead, EntryError, load_entry
from streams.transactions import transaction

logger = logging.getLogger("hsi.dlq")

_WATCH_ATTEMPTS = 20


class DeadLetterError(Exception):
    """A dead-letter operation cannot be done."""


class DeadLetterNotFoundError(DeadLetterError, LookupError):
    """No dead letter with that id on that camera."""


class DeadLetterNotRetryableError(DeadLetterError):
    """The dead letter has no original entry to re-publish."""


@dataclass(frozen=True)
class DeadLetter:
    """One `entry.dead`, as listed."""

    dead_id: str  # the id on the camera's dead stream
    camera: str
    source_stream: str
    entry_id: str  # the id on the source stream
    group: str
    deliveries: int
    last_error: str
    dead_at: datetime
    original_type: str | None  # the original entry's type, when it can be read
    retryable: bool  # the original is kept (it was not deleted before it was processed)


@dataclass(frozen=True)
class DeadLetterDetail:
    """One dead letter with its original entry decoded."""

    letter: DeadLetter
    original: Entry | None
    headers: Mapping[str, str]  # the original envelope's headers
    original_error: str | None  # why the original could not be read; None when read or absent


MAX_ERROR_CHARS = 2000


def dead_entry(
    *,
    camera: str,
    stream: str,
    entry_id: str,
    group: str,
    deliveries: int,
    last_error: str,
    data: bytes | None,
    now: datetime,
) -> EntryDead:
    """The `entry.dead` fact for one entry; `data` is its `__data__` field (None when deleted)."""
    return EntryDead(
        camera_id=camera,
        source_stream=stream,
        entry_id=entry_id,
        group=group,
        deliveries=deliveries,
        last_error=last_error[:MAX_ERROR_CHARS],
        original=None if data is None else base64.b64encode(data).decode("ascii"),
        dead_at=now,
    )


def dead_fields(entry: EntryDead, data: bytes | None) -> dict[bytes, bytes]:
    """The XADD fields of a dead letter, carrying the original's `traceparent` when it has one
    (so the dead letter joins the file's trace)."""
    headers: dict[str, str] = {}
    if data is not None:
        try:
            _, original_headers = decode(data)
        except Exception:  # an unreadable envelope just means no trace to carry on
            original_headers = {}
        traceparent = original_headers.get(HEADER_TRACEPARENT)
        if traceparent:
            headers[HEADER_TRACEPARENT] = str(traceparent)
    return entry_fields(entry, headers)


def original_bytes(dead: EntryDead) -> bytes | None:
    """The original `__data__` field of a dead letter, None when it was deleted."""
    if dead.original is None:
        return None
    try:
        return base64.b64decode(dead.original, validate=True)
    except binascii.Error as exc:
        raise DeadLetterError(
            f"the original of dead entry {dead.entry_id} is not valid base64 ({exc}); "
            "the dead letter is damaged and can only be dropped"
        ) from exc


def _read_original(data: bytes | None) -> tuple[Entry | None, dict[str, str], str | None]:
    """(entry, headers, error) of an original envelope."""
    if data is None:
        return None, {}, None
    try:
        body, raw_headers = decode(data)
    except Exception as exc:  # FastStream's parser raises various errors on foreign bytes
        return None, {}, f"not a FastStream envelope: {exc}"
    headers = {str(key): str(value) for key, value in raw_headers.items()}
    try:
        return load_entry(body), headers, None
    except EntryError as exc:
        return None, headers, str(exc)


def _letter(camera: str, dead_id: str, dead: EntryDead) -> DeadLetter:
    try:
        data = original_bytes(dead)
    except DeadLetterError:
        data = None
    original, _, _ = _read_original(data)
    return DeadLetter(
        dead_id=dead_id,
        camera=camera,
        source_stream=dead.source_stream,
        entry_id=dead.entry_id,
        group=dead.group,
        deliveries=dead.deliveries,
        last_error=dead.last_error,
        dead_at=dead.dead_at,
        original_type=None if original is None else original.type,
        retryable=dead.original is not None,
    )


def _parse_dead(dead_id: str, fields: Mapping[bytes, bytes]) -> EntryDead:
    try:
        entry, _ = read_fields(fields)
    except EntryError as exc:
        raise DeadLetterError(f"dead stream entry {dead_id} cannot be read: {exc}") from exc
    if not isinstance(entry, EntryDead):
        raise DeadLetterError(
            f"dead stream entry {dead_id} is a {entry.type}, not an entry.dead; "
            "something other than the reclaimer wrote to the dead stream"
        )
    return entry


async def _fetch(redis: Any, names: StreamNames, camera: str, dead_id: str) -> EntryDead:
    """The `entry.dead` with id `dead_id` (`redis` may be a watching pipeline)."""
    key = names.dead(camera)
    rows = await redis.xrange(key, dead_id, dead_id)
    if not rows:
        raise DeadLetterNotFoundError(
            f"no dead letter {dead_id} on camera {camera!r} (stream {key}); "
            "`hsi dlq list` shows the dead letters and their ids"
        )
    return _parse_dead(dead_id, rows[0][1])


async def list_dead(
    redis: Redis, names: StreamNames, cameras: Iterable[str], limit: int = 50
) -> list[DeadLetter]:
    """The newest `limit` dead letters over the cameras, newest first."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    letters: list[DeadLetter] = []
    for camera in cameras:
        rows: Any = await redis.xrevrange(names.dead(camera), count=limit)
        for raw_id, fields in rows:
            dead_id = reply_text(raw_id)
            try:
                dead = _parse_dead(dead_id, fields)
            except DeadLetterError as exc:
                log_event(
                    logger,
                    "dlq.unreadable",
                    level=logging.WARNING,
                    camera=camera,
                    dead_id=dead_id,
                    error=str(exc),
                )
                continue
            letters.append(_letter(camera, dead_id, dead))
    letters.sort(key=lambda letter: id_key(letter.dead_id), reverse=True)
    return letters[:limit]


async def show_dead(
    redis: Redis, names: StreamNames, camera: str, dead_id: str
) -> DeadLetterDetail:
    """One dead letter with its original entry and headers decoded."""
    dead = await _fetch(redis, names, camera, dead_id)
    try:
        data = original_bytes(dead)
    except DeadLetterError as exc:
        return DeadLetterDetail(_letter(camera, dead_id, dead), None, {}, str(exc))
    original, headers, error = _read_original(data)
    return DeadLetterDetail(_letter(camera, dead_id, dead), original, headers, error)


def retry_envelope(data: bytes, source_entry_id: str) -> bytes:
    """The original envelope with a `retry_of` header naming the entry it replaces."""
    try:
        body, raw_headers = decode(data)
    except Exception as exc:  # FastStream's parser raises various errors on foreign bytes
        raise DeadLetterNotRetryableError(
            f"the original of entry {source_entry_id} is not a FastStream envelope ({exc}); "
            "it cannot be re-published, drop it instead"
        ) from exc
    headers = {str(key): str(value) for key, value in raw_headers.items()}
    headers[HEADER_RETRY_OF] = source_entry_id
    return encode(body, headers)


def _source_stream(names: StreamNames, camera: str, dead: EntryDead) -> str:
    try:
        source_camera, _ = names.parse(dead.source_stream)
    except ValueError as exc:
        raise DeadLetterNotRetryableError(
            f"dead entry {dead.entry_id} names source stream {dead.source_stream!r}, which is "
            f"not a camera stream of this installation ({exc}); drop it instead"
        ) from exc
    if source_camera != camera:
        raise DeadLetterNotRetryableError(
            f"dead entry {dead.entry_id} comes from {dead.source_stream}, a stream of camera "
            f"{source_camera!r}, but sits on camera {camera!r}'s dead stream; drop it instead"
        )
    return dead.source_stream


async def retry_dead(redis: Redis, names: StreamNames, camera: str, dead_id: str) -> str:
    """Re-publish a dead letter's original entry to its source stream and delete the dead letter.

    Both happen in one MULTI, watched so that two concurrent retries publish the entry once.
    Returns the new entry's id on the source stream.
    """
    dead_key = names.dead(camera)
    async with transaction(redis) as pipe:
        for _ in range(_WATCH_ATTEMPTS):
            try:
                await pipe.watch(dead_key)
                dead = await _fetch(pipe, names, camera, dead_id)
                data = original_bytes(dead)
                if data is None:
                    raise DeadLetterNotRetryableError(
                        f"dead letter {dead_id} (entry {dead.entry_id} of {dead.source_stream}) "
                        "has no original: the entry was deleted before it was processed, so "
                        "there is nothing to re-publish; drop it with `hsi dlq drop`"
                    )
                source = _source_stream(names, camera, dead)
                envelope = retry_envelope(data, dead.entry_id)
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.xadd(source, {DATA_FIELD: envelope})
                pipe.xdel(dead_key, dead_id)
                new_id, _ = await pipe.execute()
            except WatchError:
                continue
            log_event(
                logger,
                "dlq.retried",
                camera=camera,
                dead_id=dead_id,
                stream=source,
                entry_id=dead.entry_id,
                new_entry_id=reply_text(new_id),
            )
            return reply_text(new_id)
    raise DeadLetterError(
        f"camera {camera!r}'s dead stream kept changing during {_WATCH_ATTEMPTS} attempts to "
        f"retry {dead_id}; try again"
    )


async def drop_dead(redis: Redis, names: StreamNames, camera: str, dead_id: str) -> None:
    """Delete a dead letter for good."""
    removed = await redis.xdel(names.dead(camera), dead_id)
    if not removed:
        raise DeadLetterNotFoundError(
            f"no dead letter {dead_id} on camera {camera!r} (stream {names.dead(camera)}); "
            "`hsi dlq list` shows the dead letters and their ids"
        )
    log_event(logger, "dlq.dropped", camera=camera, dead_id=dead_id)

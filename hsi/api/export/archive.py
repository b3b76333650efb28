"""Writing an export as a stream of chunks, never whole in memory.

`zipfile` writes to a sink that cannot seek: each member's sizes and CRC then follow its data in
a data descriptor, which unzip, Python's zipfile and the usual archivers read. After every
piece written, what the sink holds is handed out, so memory stays at one read buffer (and one
decoded picture while its boxes are drawn) whatever the size of the export. Already-compressed
camera files and pictures are stored, the texts deflated.

Blocking (file reads, picture decoding): a caller iterates `archive_chunks()` in a worker
thread, as Starlette's `StreamingResponse` does with a plain iterator.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hsi.api.export.manifest import MANIFEST, README, event_folder, manifest_text
from hsi.api.export.plan import (
    EventExport,
    ExportConfig,
    ExportPlan,
    FileState,
    Original,
    Picture,
)
from hsi.api.export.summary import event_summary, readme
from hsi.api.thumbnails import draw_boxes, load_picture
from hsi.logs.setup import log_event
from streams.detectors.base import UndecodableMediaError

log = logging.getLogger("hsi.api.export")

CHUNK = 1024 * 1024
_EARLIEST = 315_532_800  # 1980-01-01, the first time a zip can hold


class _Sink(io.RawIOBase):
    """Write-only and unseekable: collects what zipfile writes until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is buffered here (and a sink closed by the collector flushes nothing)."""

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(self._parts[-1])

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _info(name: str, mtime: float, size: int, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, time.gmtime(max(mtime, _EARLIEST))[:6])
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    info.file_size = size  # for the zip64 decision only: the real size is written after
    return info


class _Writer:
    def __init__(self, created: float) -> None:
        self.sink = _Sink()
        self.zip = zipfile.ZipFile(self.sink, "w")  # closed by `close()`
        self.digests: dict[str, str] = {}
        self.created = created

    def add_bytes(self, name: str, data: bytes, compress: int = zipfile.ZIP_DEFLATED) -> bytes:
        info = _info(name, self.created, len(data), compress)
        with self.zip.open(info, "w") as handle:
            handle.write(data)
        self.digests[name] = hashlib.sha256(data).hexdigest()
        return self.sink.take()

    def add_file(self, original: Original, source: IO[bytes]) -> Iterator[bytes]:
        digest = hashlib.sha256()
        info = _info(original.member, original.mtime, original.size, zipfile.ZIP_STORED)
        with self.zip.open(info, "w", force_zip64=original.size > zipfile.ZIP64_LIMIT) as handle:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                yield self.sink.take()
        self.digests[original.member] = digest.hexdigest()
        yield self.sink.take()

    def close(self) -> bytes:
        self.zip.close()
        return self.sink.take()


def _picture_jpeg(picture: Picture, config: ExportConfig) -> bytes:
    image = load_picture(picture.source)
    space = picture.box_space if min(picture.box_space) > 0 else image.size
    canvas = draw_boxes(image, picture.boxes, space, config.picture_max_width)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=config.jpeg_quality, subsampling=0)
    return buffer.getvalue()


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def _originals(writer: _Writer, event: EventExport, record: dict[str, Any]) -> Iterator[bytes]:
    """The event's camera files, byte for byte (each once per zip); their digests go into
    `record`, and a file gone since the plan was made is recorded as such."""
    files = {f["archive_path"]: f for f in record["files"] if f["archive_path"]}
    for original in event.originals:
        entry = files[original.member]
        if original.member not in writer.digests:
            try:
                source = original.source.open("rb")
            except OSError as exc:
                gone = isinstance(exc, FileNotFoundError)
                entry["state"] = (FileState.MISSING if gone else FileState.UNREADABLE).value
                entry["note"] = "no longer on disk" if gone else f"unreadable: {exc}"
                entry.update(archive_path=None, picture=None)
                continue
            with source:
                yield from writer.add_file(original, source)
        digest = entry["archive_sha256"] = writer.digests[original.member]
        recorded = entry["recorded_sha256"]
        entry["matches_recorded"] = None if recorded is None else recorded == digest


def _pictures(
    writer: _Writer, event: EventExport, record: dict[str, Any], config: ExportConfig
) -> Iterator[bytes]:
    """The event's files with their boxes drawn; one that cannot be drawn is noted instead."""
    files = {f["picture"]: f for f in record["files"] if f["picture"]}
    for picture in event.pictures:
        entry = files.get(picture.member)
        if entry is None:  # its original is gone
            continue
        try:
            jpeg = _picture_jpeg(picture, config)
        except (UndecodableMediaError, OSError, ValueError) as exc:
            log_event(log, "export.picture_failed", level=logging.WARNING, reason=str(exc))
            entry["picture"] = None
            entry["picture_error"] = str(exc)
            continue
        yield writer.add_bytes(picture.member, jpeg, zipfile.ZIP_STORED)


def archive_chunks(plan: ExportPlan, config: ExportConfig) -> Iterator[bytes]:
    """The zip of `plan`, piece by piece: per event its originals, pictures, event.json and
    summary.txt; then README.txt; SHA256SUMS last."""
    writer = _Writer(plan.created_at.timestamp())
    try:
        records = []
        for event in plan.events:
            record = copy.deepcopy(event.record)
            yield from _originals(writer, event, record)
            yield from _pictures(writer, event, record, config)
            folder = event_folder(event.event_id)
            yield writer.add_bytes(f"{folder}/event.json", _json(record))
            summary = event_summary(record, config.zone)
            yield writer.add_bytes(f"{folder}/summary.txt", summary.encode())
            records.append(record)
        text = readme(records, plan.created_at, plan.selection, config.zone)
        yield writer.add_bytes(README, text.encode())
        yield writer.add_bytes(MANIFEST, manifest_text(writer.digests).encode())
        yield writer.close()
    finally:
        # a consumer that stopped early (a client gone): end the zip quietly, it is not sent
        with contextlib.suppress(ValueError, OSError):
            writer.zip.close()


def write_zip(plan: ExportPlan, config: ExportConfig, path: Path) -> int:
    """Write the zip of `plan` to `path` (through a temporary file beside it, renamed at the
    end, so a failed export leaves nothing behind); its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in archive_chunks(plan, config):
                handle.write(chunk)
                size += len(chunk)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return size

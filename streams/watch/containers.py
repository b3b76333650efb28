"""Whether a video file holds its whole container, judged from the sizes the container declares.

A half-uploaded Matroska or AVI clip opens and decodes fine with PyAV, so opening it proves
little. Containers declare their own length, though: an MP4/MOV is a sequence of boxes with
sizes, an AVI's RIFF header and a Matroska Segment carry their size. A file shorter than what it
declares is still being written. Containers that leave the size open (streamed Matroska with an
"unknown" Segment size, an AVI whose RIFF size was never filled in) cannot be judged here; for
them the watcher relies on the size staying stable.

Blocking (reads a few header bytes): call from a thread.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

_EBML = b"\x1a\x45\xdf\xa3"
_SEGMENT = b"\x18\x53\x80\x67"
_RIFF = b"RIFF"
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot", b"uuid"})
_HEAD = 4096
_MAX_BOXES = 100_000  # a sane MP4 has a handful of top-level boxes


def container_shortfall(handle: BinaryIO, size: int) -> str | None:
    """Why the container in `handle` (`size` bytes) is incomplete, or None (complete/unknown)."""
    handle.seek(0)
    head = handle.read(_HEAD)
    if head.startswith(_EBML):
        return _matroska(head, size)
    if head.startswith(_RIFF):
        return _riff(head, size)
    if head[4:8] in _ISO_BOXES:
        return _iso_boxes(handle, size)
    return None


def _riff(head: bytes, size: int) -> str | None:
    if len(head) < 8:
        return "RIFF header cut short"
    (declared,) = struct.unpack_from("<I", head, 4)
    if declared and declared + 8 > size:
        return f"RIFF declares {declared + 8} bytes, the file has {size}"
    return None


def _iso_boxes(handle: BinaryIO, size: int) -> str | None:
    offset = 0
    for _ in range(_MAX_BOXES):
        if offset == size:
            return None
        handle.seek(offset)
        header = handle.read(16)
        if len(header) < 8:
            return f"box header at byte {offset} cut short"
        (box_size,) = struct.unpack_from(">I", header, 0)
        if box_size == 0:
            return None  # the last box runs to the end of the file
        if box_size == 1:
            if len(header) < 16:
                return f"box header at byte {offset} cut short"
            (box_size,) = struct.unpack_from(">Q", header, 8)
        if box_size < 8:
            return f"box at byte {offset} declares an impossible size {box_size}"
        offset += box_size
        if offset > size:
            return f"box ends at byte {offset}, the file has {size}"
    return None


def _vint(data: bytes, pos: int) -> tuple[int, int, bool] | None:
    """An EBML variable-length integer at `pos`: (value, length, all value bits set)."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        return None
    value = data[pos] & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    unknown = value == (1 << (7 * length)) - 1
    return value, length, unknown


def _matroska(head: bytes, size: int) -> str | None:
    header_size = _vint(head, len(_EBML))
    if header_size is None:
        return "EBML header cut short"
    value, length, _ = header_size
    pos = len(_EBML) + length + value
    if head[pos : pos + len(_SEGMENT)] != _SEGMENT:
        return None if len(head) >= pos + len(_SEGMENT) else "Segment header cut short"
    segment_size = _vint(head, pos + len(_SEGMENT))
    if segment_size is None:
        return "Segment header cut short"
    value, length, unknown = segment_size
    if unknown:
        return None  # a live-streamed file: its size was never written
    end = pos + len(_SEGMENT) + length + value
    if end > size:
        return f"Segment ends at byte {end}, the file has {size}"
    return None

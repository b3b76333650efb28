"""Which camera files are media, what kind, and whether their first bytes agree with the name.

Extensions are compared case-insensitively (`IMG.JPG` is an image). `sniff_kind()` reads magic
bytes so that a file whose extension lies (a text file named `.jpg`) can be refused before it is
decoded; `sniff_container()` names the one FFmpeg demuxer a video may be opened with, so that
FFmpeg never guesses among its hundreds of formats (playlists among them) for an upload.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import PurePath


class MediaKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mkv", ".avi", ".mov"})
MEDIA_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

_MIME_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".mov": "video/quicktime",
}

# How many leading bytes `sniff_kind()` needs to recognize every format it knows.
SNIFF_BYTES = 12

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska / WebM
# ISO base media (MP4, MOV): the first box type. Old QuickTime files may start without `ftyp`.
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide"})

PathLike = str | os.PathLike[str]


def _suffix(path: PathLike) -> str:
    return PurePath(os.fspath(path)).suffix.lower()


def media_kind(path: PathLike) -> MediaKind | None:
    """`image` or `video` by extension, or None for anything else."""
    suffix = _suffix(path)
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    return None


def is_image(path: PathLike) -> bool:
    return media_kind(path) is MediaKind.IMAGE


def is_video(path: PathLike) -> bool:
    return media_kind(path) is MediaKind.VIDEO


def is_media(path: PathLike) -> bool:
    return media_kind(path) is not None


def mime_type(path: PathLike) -> str | None:
    """The MIME type for a media file name, or None when it is not a media file."""
    return _MIME_TYPES.get(_suffix(path))


def sniff_kind(head: bytes) -> MediaKind | None:
    """The kind the first bytes of a file announce (JPEG, PNG, MP4/MOV, MKV, AVI), else None.

    Pass at least `SNIFF_BYTES` bytes; fewer may fail to recognize AVI and MP4.
    """
    if head.startswith(_JPEG) or head.startswith(_PNG):
        return MediaKind.IMAGE
    if sniff_container(head) is not None:
        return MediaKind.VIDEO
    return None


def sniff_container(head: bytes) -> str | None:
    """The FFmpeg demuxer for a video's first bytes (`mov` for MP4/MOV, `matroska`, `avi`), else
    None. Pass at least `SNIFF_BYTES` bytes."""
    if head.startswith(_EBML):
        return "matroska"
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mov"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    return None


def content_matches_name(path: PathLike, head: bytes) -> bool:
    """Whether the file's first bytes are media of the kind its extension claims."""
    claimed = media_kind(path)
    return claimed is not None and sniff_kind(head) is claimed

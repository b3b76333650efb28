"""Which camera a path belongs to and whether it is media worth watching.

`classify` decides from the path alone, except for one look at the file system: the resolved
(symlink-free) path must stay inside the camera root, so a symlink planted in a camera folder
cannot expose files elsewhere on the machine. The probe checks that again on the file it opens
(`streams.watch.probe.open_confined`), since a path can be swapped for a symlink later, and
refuses hard links, whose other names may lie anywhere on the same file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath

from streams.detectors.base import MediaKind
from streams.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, mime_type
from streams.names import CameraIdError, camera_id

# Names FTP servers and clients give files still being written (before the final rename).
TEMPORARY_SUFFIXES: tuple[str, ...] = (
    ".part",
    ".partial",
    ".filepart",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
)


class IgnoreReason(StrEnum):
    OUTSIDE_ROOT = "outside_root"  # not under the camera root at all
    NO_CAMERA_FOLDER = "no_camera_folder"  # directly in the root, not in a camera folder
    HIDDEN = "hidden"  # a `.`-prefixed file or folder on the way
    TEMPORARY = "temporary"  # an upload still carrying its temporary name
    NOT_MEDIA = "not_media"  # not an image or video extension
    BAD_CAMERA_NAME = "bad_camera_name"  # the folder name yields no camera id
    CAMERA_ID_TAKEN = "camera_id_taken"  # another folder maps to the same camera id
    SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"  # resolves to a file outside the root
    HARD_LINK = "hard_link"  # the file has other names, which may lie outside the root
    BAD_ENCODING = "bad_encoding"  # a name on the way is not UTF-8: no entry can carry it
    TOO_OLD = "too_old"  # the start-up scan's age limit
    NOT_A_FILE = "not_a_file"  # a folder, socket, device…


# Reasons that point at a misconfigured or hostile camera folder: logged as warnings.
REFUSALS: frozenset[IgnoreReason] = frozenset(
    {
        IgnoreReason.SYMLINK_OUTSIDE_ROOT,
        IgnoreReason.HARD_LINK,
        IgnoreReason.BAD_ENCODING,
        IgnoreReason.CAMERA_ID_TAKEN,
    }
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A media file of a camera, not yet known to be complete."""

    path: Path  # as found under the camera root (not resolved)
    relative: str  # POSIX path relative to the camera root: "Front Door/snap/x.jpg"
    camera_id: str  # "front_door"
    camera_folder: str  # "Front Door"
    media_kind: MediaKind
    mime: str  # by extension; the probe may correct it for images


@dataclass(frozen=True, slots=True)
class Ignored:
    path: Path
    reason: IgnoreReason


def media_kind_of(name: str) -> MediaKind | None:
    """`image` or `video` by extension (case-insensitive), else None."""
    suffix = PurePath(name).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def is_hidden(part: str) -> bool:
    return part.startswith(".")


def is_temporary(name: str) -> bool:
    lowered = name.lower()
    return name.startswith("~") or name.endswith("~") or lowered.endswith(TEMPORARY_SUFFIXES)


def classify(path: Path, camera_root: Path) -> Candidate | Ignored:
    """Decide whether `path` (absolute, under `camera_root`) is a camera's media file.

    The camera is the first folder under the root (`<root>/Front Door/snap/x.jpg` →
    `front_door`); files directly in the root belong to no camera. Hidden and temporary names
    anywhere on the way are ignored, and so are non-media extensions, names that are not UTF-8
    (an old FTP client's Latin-1 `café.jpg`) and symlinks whose target lies outside the root.
    """
    root = Path(os.path.abspath(camera_root))
    absolute = Path(os.path.abspath(path))
    try:
        parts = absolute.relative_to(root).parts
    except ValueError:
        return Ignored(path, IgnoreReason.OUTSIDE_ROOT)
    if not parts:
        return Ignored(path, IgnoreReason.NOT_A_FILE)
    if any(is_hidden(part) for part in parts):
        return Ignored(path, IgnoreReason.HIDDEN)
    if any(is_temporary(part) for part in parts):
        return Ignored(path, IgnoreReason.TEMPORARY)
    if not _inside(absolute, root):  # before the name checks: a linked folder says so
        return Ignored(path, IgnoreReason.SYMLINK_OUTSIDE_ROOT)
    if len(parts) < 2:
        return Ignored(path, IgnoreReason.NO_CAMERA_FOLDER)
    kind = media_kind_of(parts[-1])
    if kind is None:
        return Ignored(path, IgnoreReason.NOT_MEDIA)
    if not all(_is_utf8(part) for part in parts):
        return Ignored(path, IgnoreReason.BAD_ENCODING)
    try:
        camera = camera_id(parts[0])
    except CameraIdError:
        return Ignored(path, IgnoreReason.BAD_CAMERA_NAME)
    return Candidate(
        path=absolute,
        relative=PurePath(*parts).as_posix(),
        camera_id=camera,
        camera_folder=parts[0],
        media_kind=kind,
        mime=mime_type(parts[-1]) or "application/octet-stream",
    )


def _is_utf8(part: str) -> bool:
    """Whether a name decoded from the file system was valid UTF-8 (else it holds surrogates)."""
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, every symlink resolved, lies under `root` (also resolved)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop, a vanished folder: not trustworthy
        return False


def admitted_by_scan(mtime: float, now: float, max_age_seconds: float) -> bool:
    """Whether the start-up scan takes a file last modified at `mtime` (epoch seconds)."""
    return now - mtime <= max_age_seconds

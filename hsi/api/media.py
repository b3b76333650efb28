"""Serving camera files: where a requested path may lead, and the HTTP caching decisions.

`resolve_media()` is the whole confinement rule. A request names a camera and a path relative
to the camera root (`Front Door/snap/x.jpg`); the path must resolve, symlinks followed, to a
regular media file inside that camera's own folder. Anything else — `..`, absolute paths, NUL,
hidden components, a symlink leading out of the folder, another camera's folder, a type outside
the allow-list, a missing file — is refused with the same `MediaRefused`, which the route turns
into the same 404, so an answer never tells whether something exists outside.
"""

from __future__ import annotations

import hashlib
import os
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path, PurePosixPath

from streams.media import mime_type
from streams.paths import PathOutsideRootError, confine

CACHE_CONTROL = "private, max-age=86400"


class MediaRefused(Exception):
    """The path does not name a media file this camera may serve (the reason is for logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve_media(root: Path, folder: str, relative: str) -> tuple[Path, str]:
    """The real path of a camera's media file and its MIME type, or `MediaRefused`."""
    if not folder or not relative:
        raise MediaRefused("empty folder or path")
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if any(part.startswith(".") for part in parts):
        raise MediaRefused("dot segment or hidden component")
    if mime_type(relative) is None:
        raise MediaRefused("not an allow-listed media type")
    try:
        camera_dir = confine(root, folder)
        target = confine(root, relative)
    except (PathOutsideRootError, OSError, RuntimeError) as exc:
        raise MediaRefused(f"outside the camera root: {exc}") from None
    if camera_dir == root.resolve() or camera_dir not in target.parents:
        raise MediaRefused("outside the camera's folder")
    mime = mime_type(target)  # the name a symlink leads to must be media too
    if mime is None:
        raise MediaRefused("resolves to a file that is not an allow-listed media type")
    if not target.is_file():
        raise MediaRefused("no such regular file")
    return target, mime


def etag_of(stat: os.stat_result) -> str:
    """A strong validator from size and modification time (ns): a replaced file gets a new one."""
    digest = hashlib.sha256(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return f'"{digest}"'


def caching_headers(stat: os.stat_result) -> dict[str, str]:
    return {
        "ETag": etag_of(stat),
        "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
    }


def not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, mtime: float
) -> bool:
    """RFC 9110 §13.1: If-None-Match wins over If-Modified-Since; weak comparison for ETags."""
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since.timestamp()
    return False

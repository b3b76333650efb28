"""`SHA256SUMS` in the exact format of GNU `sha256sum` (text mode: `<hex>  <name>`), and the
names of the zip's members."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

MANIFEST = "SHA256SUMS"
README = "README.txt"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class ManifestError(ValueError):
    """A line of SHA256SUMS that is not `<64 hex digits>  <name>`."""


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(name: str) -> str:
    out = []
    chars = iter(name)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        replaced = {"\\": "\\", "n": "\n", "r": "\r"}.get(following)
        if replaced is None:
            raise ManifestError(f"bad escape \\{following} in {name!r}")
        out.append(replaced)
    return "".join(out)


def manifest_line(name: str, digest: str) -> str:
    """One line as `sha256sum` writes it: a name holding a backslash or a line break is escaped
    and the line starts with a backslash."""
    if any(c in name for c in "\\\n\r"):
        return f"\\{digest}  {_escape(name)}\n"
    return f"{digest}  {name}\n"


def manifest_text(digests: dict[str, str]) -> str:
    return "".join(manifest_line(name, digest) for name, digest in digests.items())


def parse_manifest(text: str) -> dict[str, str]:
    """Name → digest of every line; `ManifestError` for a line that is not one, or a name
    listed twice."""
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        escaped = line.startswith("\\")
        body = line[1:] if escaped else line
        digest, separator, name = body.partition("  ")
        if not separator or not _HEX.match(digest) or not name:
            raise ManifestError(f"{MANIFEST} line {number} is not '<sha256 hex>  <name>'")
        if escaped:
            name = _unescape(name)
        if name in listed:
            raise ManifestError(f"{MANIFEST} lists {name!r} twice")
        listed[name] = digest
    return listed


def original_member(camera_id: str, path: str) -> str:
    """Where a camera file goes: `files/<camera_id>/<path relative to the camera root>`."""
    return f"files/{camera_id}/{PurePosixPath(path.replace(chr(92), '/')).as_posix()}"


def event_folder(event_id: str) -> str:
    return f"events/{event_id}"


def picture_member(event_id: str, number: int, path: str) -> str:
    """The file with its boxes drawn: `events/<id>/pictures/<number>-<file stem>.jpg` (its
    number in the event, from 1, as in summary.txt)."""
    stem = _UNSAFE.sub("_", PurePosixPath(path.replace("\\", "/")).stem).strip(" .") or "file"
    return f"{event_folder(event_id)}/pictures/{number:03d}-{stem[:80]}.jpg"

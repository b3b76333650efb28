"""Checking an export: `hsi export verify`.

Offline, from the zip alone: every member is listed in SHA256SUMS with its digest, nothing is
listed that is missing, and every original file's digest equals the one HSI recorded when the
file arrived (copied into each event.json). With the database at hand, the same digests are
also compared with `media_files.sha256` itself, so that an archive whose event.json was edited
together with a file and SHA256SUMS is caught too.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api.export.manifest import MANIFEST, ManifestError, parse_manifest
from projections.tables import media_files

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class OriginalDigest:
    """An original file of the zip and the file entry it was recorded by."""

    member: str
    camera_id: str
    file_entry_id: str
    digest: str  # of the member as it is in the zip


@dataclass
class Verification:
    members: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    originals: list[OriginalDigest] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def manifest_problems(listed: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What differs between SHA256SUMS (`listed`) and the members' digests (`actual`)."""
    problems = []
    for name, digest in actual.items():
        if name not in listed:
            problems.append(f"{name}: in the archive but not listed in {MANIFEST}")
        elif listed[name] != digest:
            problems.append(f"{name}: SHA-256 {digest} differs from {listed[name]} in {MANIFEST}")
    problems.extend(
        f"{name}: listed in {MANIFEST} but not in the archive"
        for name in listed
        if name not in actual
    )
    return problems


def recorded_problems(
    record: Mapping[str, Any], source: str, actual: Mapping[str, str]
) -> tuple[list[str], list[str], list[OriginalDigest]]:
    """Each original of one event.json (`source`) against the digest recorded on arrival."""
    problems: list[str] = []
    notes: list[str] = []
    originals = []
    camera_id = str(record.get("camera_id"))
    for f in record.get("files") or []:
        member = f.get("archive_path")
        if not member:
            continue
        if member not in actual:
            problems.append(f"{member}: named by {source} but not in the archive")
            continue
        recorded = f.get("recorded_sha256")
        if recorded is None:
            notes.append(f"{member}: no digest was recorded when it arrived")
        elif recorded != actual[member]:
            problems.append(
                f"{member}: SHA-256 {actual[member]} differs from {recorded}, recorded when the "
                f"file arrived ({source})"
            )
        originals.append(OriginalDigest(member, camera_id, str(f["file_entry_id"]), actual[member]))
    return problems, notes, originals


def _digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with archive.open(info) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_zip(path: Path) -> Verification:
    """Check a zip offline (SHA256SUMS and event.json); blocking."""
    result = Verification()
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        result.problems.append(f"{path}: not a readable zip ({exc})")
        return result
    with archive:
        actual: dict[str, str] = {}
        for info in archive.infolist():
            if info.filename in actual:
                result.problems.append(f"{info.filename}: in the archive twice")
                continue
            try:
                actual[info.filename] = _digest(archive, info)
            except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                result.problems.append(f"{info.filename}: cannot be read ({exc})")
                actual[info.filename] = "unreadable"
        manifest = actual.pop(MANIFEST, None)
        result.members = len(actual)
        if manifest is None:
            result.problems.append(f"{MANIFEST}: not in the archive")
            return result
        try:
            listed = parse_manifest(archive.read(MANIFEST).decode("utf-8"))
        except (ManifestError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error) as exc:
            result.problems.append(f"{MANIFEST}: {exc}")
            return result
        result.problems += manifest_problems(listed, actual)
        for name in sorted(actual):
            if not (name.startswith("events/") and name.endswith("/event.json")):
                continue
            try:
                record = json.loads(archive.read(name))
            except (ValueError, zipfile.BadZipFile, zlib.error) as exc:
                result.problems.append(f"{name}: not readable JSON ({exc})")
                continue
            problems, notes, originals = recorded_problems(record, name, actual)
            result.problems += problems
            result.notes += notes
            result.originals += originals
    return result


async def database_digests(
    conn: AsyncConnection, originals: Sequence[OriginalDigest]
) -> dict[tuple[str, str], str | None]:
    """`media_files.sha256` of each original's (camera, file entry), where the row still is."""
    keys = sorted({(o.camera_id, o.file_entry_id) for o in originals})
    if not keys:
        return {}
    key = tuple_(media_files.c.camera_id, media_files.c.entry_id)
    rows = await conn.execute(
        select(media_files.c.camera_id, media_files.c.entry_id, media_files.c.sha256).where(
            key.in_(keys)
        )
    )
    return {(r.camera_id, r.entry_id): r.sha256 for r in rows}


def database_problems(
    originals: Sequence[OriginalDigest], recorded: Mapping[tuple[str, str], str | None]
) -> tuple[list[str], list[str]]:
    """Each original against the digest PostgreSQL holds for its file entry."""
    problems: list[str] = []
    notes: list[str] = []
    for o in originals:
        key = (o.camera_id, o.file_entry_id)
        if key not in recorded:
            notes.append(
                f"{o.member}: the database holds no record of file entry {o.file_entry_id} any "
                "more (deleted by retention?); checked against event.json only"
            )
        elif recorded[key] is not None and recorded[key] != o.digest:
            problems.append(
                f"{o.member}: SHA-256 {o.digest} differs from {recorded[key]}, recorded in the "
                f"database for file entry {o.file_entry_id}"
            )
    return problems, notes

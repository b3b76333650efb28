"""Path confinement of media requests and the HTTP caching decisions, on a real folder tree."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest

from hsi.api.media import MediaRefused, etag_of, not_modified, resolve_media


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A camera root with two cameras, a secret outside it and planted symlinks."""
    root = tmp_path / "cameras"
    (root / "Front Door" / "snap").mkdir(parents=True)
    (root / "Other Cam").mkdir()
    (root / "Front Door" / "snap" / "a.jpg").write_bytes(b"\xff\xd8\xffjpeg")
    (root / "Front Door" / "snap" / "notes.txt").write_text("text")
    (root / "Front Door" / ".hidden").mkdir()
    (root / "Front Door" / ".hidden" / "h.jpg").write_bytes(b"\xff\xd8\xff")
    (root / "Other Cam" / "x.jpg").write_bytes(b"\xff\xd8\xffother")
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8\xffsecret")
    snap = root / "Front Door" / "snap"
    os.symlink(tmp_path / "secret.jpg", snap / "out.jpg")
    os.symlink(root / "Other Cam" / "x.jpg", snap / "other.jpg")
    os.symlink(snap / "a.jpg", snap / "inside.jpg")
    os.symlink(snap / "notes.txt", snap / "notes.jpg")
    os.symlink(tmp_path, root / "Front Door" / "up")
    return root


def test_a_file_in_the_camera_folder_is_served(root: Path) -> None:
    """A plain media file of the camera resolves with its MIME type."""
    path, mime = resolve_media(root, "Front Door", "Front Door/snap/a.jpg")
    assert path == (root / "Front Door" / "snap" / "a.jpg").resolve()
    assert mime == "image/jpeg"


def test_a_symlink_inside_the_folder_is_followed(root: Path) -> None:
    """A symlink to another file of the same camera folder is fine."""
    path, _ = resolve_media(root, "Front Door", "Front Door/snap/inside.jpg")
    assert path.name == "a.jpg"


@pytest.mark.parametrize(
    "relative",
    [
        "Front Door/../Other Cam/x.jpg",
        "../secret.jpg",
        "Front Door/snap/../../../secret.jpg",
        "/etc/passwd",
        "/Front Door/snap/a.jpg",
        "\\Front Door\\snap\\a.jpg",
        "Front Door\\..\\Other Cam\\x.jpg",
        "Front Door/snap/a.jpg\x00.png",
        "Front Door/snap/out.jpg",  # symlink out of the root
        "Front Door/snap/other.jpg",  # symlink into another camera's folder
        "Front Door/up/secret.jpg",  # symlinked folder out of the root
        "Front Door/snap/notes.txt",  # not a media type
        "Front Door/snap/notes.jpg",  # a media name leading to a non-media file
        "Front Door/.hidden/h.jpg",
        "Front Door/snap/missing.jpg",
        "Front Door/snap",
        "Other Cam/x.jpg",  # another camera's file under this camera's id
        "Front Door/snap/%2e%2e/%2e%2e/secret.jpg",  # double-encoded: a literal name
        "",
    ],
)
def test_everything_else_is_refused(root: Path, relative: str) -> None:
    """Traversal, absolute paths, NUL, escaping symlinks, other cameras and non-media fail."""
    with pytest.raises(MediaRefused):
        resolve_media(root, "Front Door", relative)


@pytest.mark.parametrize("folder", ["", ".", "..", "/", "Front Door/.."])
def test_a_camera_folder_that_is_the_root_or_outside_is_refused(root: Path, folder: str) -> None:
    """A camera whose folder would be the root itself (or above it) serves nothing."""
    with pytest.raises(MediaRefused):
        resolve_media(root, folder, "Other Cam/x.jpg")


def test_not_modified_decisions(tmp_path: Path) -> None:
    """If-None-Match (any of a list, weak or `*`) wins over If-Modified-Since."""
    file = tmp_path / "f.jpg"
    file.write_bytes(b"x")
    stat = file.stat()
    etag = etag_of(stat)
    later = formatdate(stat.st_mtime + 10, usegmt=True)
    earlier = formatdate(stat.st_mtime - 10, usegmt=True)
    assert not_modified(etag, None, etag, stat.st_mtime)
    assert not_modified(f'"other", W/{etag}', None, etag, stat.st_mtime)
    assert not_modified("*", None, etag, stat.st_mtime)
    assert not not_modified('"other"', later, etag, stat.st_mtime)
    assert not_modified(None, later, etag, stat.st_mtime)
    assert not not_modified(None, earlier, etag, stat.st_mtime)
    assert not not_modified(None, "garbage", etag, stat.st_mtime)
    assert not not_modified(None, None, etag, stat.st_mtime)


def test_etag_changes_when_the_file_changes(tmp_path: Path) -> None:
    """Size and mtime make the ETag."""
    file = tmp_path / "f.jpg"
    file.write_bytes(b"x")
    before = etag_of(file.stat())
    file.write_bytes(b"xy")
    assert etag_of(file.stat()) != before

"""Media kinds, MIME types and magic-byte sniffing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.media import (
    IMAGE_EXTENSIONS,
    SNIFF_BYTES,
    VIDEO_EXTENSIONS,
    MediaKind,
    content_matches_name,
    is_image,
    is_media,
    is_video,
    media_kind,
    mime_type,
    sniff_kind,
)

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"
MOV_HEAD = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00"
OLD_MOV_HEAD = b"\x00\x00\x00\x08wide\x00\x00\x00\x00"
MKV_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81"
AVI_HEAD = b"RIFF\x24\x00\x01\x00AVI LIST"
WAV_HEAD = b"RIFF\x24\x00\x01\x00WAVEfmt "


def test_extension_sets_match_the_spec() -> None:
    """The accepted extensions are exactly the documented ones."""
    assert sorted(IMAGE_EXTENSIONS) == [".jpeg", ".jpg", ".png"]
    assert sorted(VIDEO_EXTENSIONS) == [".avi", ".mkv", ".mov", ".mp4"]


@pytest.mark.parametrize(
    ("name", "kind", "mime"),
    [
        ("snap.jpg", MediaKind.IMAGE, "image/jpeg"),
        ("snap.JPG", MediaKind.IMAGE, "image/jpeg"),
        ("snap.jpeg", MediaKind.IMAGE, "image/jpeg"),
        ("Snap.JpEg", MediaKind.IMAGE, "image/jpeg"),
        ("snap.png", MediaKind.IMAGE, "image/png"),
        ("clip.mp4", MediaKind.VIDEO, "video/mp4"),
        ("clip.MP4", MediaKind.VIDEO, "video/mp4"),
        ("clip.mkv", MediaKind.VIDEO, "video/x-matroska"),
        ("clip.avi", MediaKind.VIDEO, "video/x-msvideo"),
        ("clip.mov", MediaKind.VIDEO, "video/quicktime"),
        ("cams/front/2024-05-01/MDAlarm_20240501-120000.jpg", MediaKind.IMAGE, "image/jpeg"),
        ("notes.txt", None, None),
        ("archive.jpg.part", None, None),
        ("snapshot", None, None),
        (".jpg", None, None),
        ("clip.webm", None, None),
        ("image.gif", None, None),
    ],
)
def test_media_kind_and_mime_type_follow_the_extension(
    name: str, kind: MediaKind | None, mime: str | None
) -> None:
    """Kind and MIME type come from the extension, case-insensitively."""
    assert media_kind(name) is kind
    assert media_kind(Path(name)) is kind
    assert mime_type(name) == mime
    assert is_image(name) is (kind is MediaKind.IMAGE)
    assert is_video(name) is (kind is MediaKind.VIDEO)
    assert is_media(name) is (kind is not None)


def test_media_kind_is_a_plain_string() -> None:
    """MediaKind values compare equal to and serialize as their strings."""
    assert isinstance(MediaKind.IMAGE, str)
    assert MediaKind("image") is MediaKind.IMAGE
    assert f"{MediaKind.VIDEO}" == "video"
    assert json.dumps({"kind": MediaKind.VIDEO}) == '{"kind": "video"}'


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (JPEG_HEAD, MediaKind.IMAGE),
        (PNG_HEAD, MediaKind.IMAGE),
        (MP4_HEAD, MediaKind.VIDEO),
        (MOV_HEAD, MediaKind.VIDEO),
        (OLD_MOV_HEAD, MediaKind.VIDEO),
        (MKV_HEAD, MediaKind.VIDEO),
        (AVI_HEAD, MediaKind.VIDEO),
        (WAV_HEAD, None),
        (b"GIF89a\x01\x00\x01\x00\x00\x00", None),
        (b"hello world, not media", None),
        (b"", None),
        (b"\xff\xd8", None),
        (b"RIFF", None),
    ],
)
def test_sniff_kind_reads_magic_bytes(head: bytes, kind: MediaKind | None) -> None:
    """JPEG, PNG, MP4/MOV, MKV and AVI are recognized by their first bytes; others are not."""
    assert sniff_kind(head) is kind
    assert sniff_kind(head[:SNIFF_BYTES]) is kind


@pytest.mark.parametrize(
    ("name", "head", "matches"),
    [
        ("a.jpg", JPEG_HEAD, True),
        ("a.png", PNG_HEAD, True),
        ("a.mp4", MP4_HEAD, True),
        ("a.mov", MP4_HEAD, True),
        ("a.avi", AVI_HEAD, True),
        ("a.jpg", b"<html>not an image</html>", False),
        ("a.jpg", MP4_HEAD, False),
        ("a.mp4", PNG_HEAD, False),
        ("a.txt", JPEG_HEAD, False),
    ],
)
def test_content_matches_name_refuses_lying_extensions(
    name: str, head: bytes, matches: bool
) -> None:
    """A file is accepted only when its bytes are media of the kind its name claims."""
    assert content_matches_name(name, head) is matches

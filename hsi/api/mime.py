"""MIME helpers of the application shell; the tables live in `streams.media`, shared with the
watcher, so that what is watched and what the API serves cannot disagree."""

from streams.media import (
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
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

__all__ = [
    "IMAGE_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "SNIFF_BYTES",
    "VIDEO_EXTENSIONS",
    "MediaKind",
    "content_matches_name",
    "is_image",
    "is_media",
    "is_video",
    "media_kind",
    "mime_type",
    "sniff_kind",
]

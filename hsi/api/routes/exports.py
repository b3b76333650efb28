"""GET /api/events/{event_id}/export: one event as an evidence zip (see `hsi.api.export`).

The event's rows are read and its files located first; an export over EXPORT_MAX_MB is a 413
before anything is sent. The zip is then written while it is sent (a worker thread reads the
files and draws the boxes), so memory stays small whatever the size of the files.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hsi.api.config import APIConfig
from hsi.api.endpoint import UUID, Endpoint, path_param
from hsi.api.export.archive import archive_chunks
from hsi.api.export.plan import (
    MIB,
    ExportConfig,
    ExportError,
    ExportTooLarge,
    build_plan,
    check_size,
)
from hsi.api.params import Query, parse_uuid
from hsi.api.responses import APIError, NotFound
from hsi.api.state import resources

ZIP = "application/zip"


def export_config(config: APIConfig) -> ExportConfig:
    return ExportConfig(
        camera_root=config.camera_root,
        max_bytes=config.export_max_mb * MIB,
        picture_max_width=config.export_picture_max_width,
        jpeg_quality=max(config.thumbnail_jpeg_quality, 90),
        zone=config.timezone,
    )


async def event_export(request: Request, _: Query) -> Response:
    """A zip of the event: original files, pictures with boxes, event.json, summary.txt and a
    SHA256SUMS manifest."""
    res = resources(request)
    raw = request.path_params["event_id"]
    event_id = parse_uuid(raw)
    if event_id is None:
        raise NotFound(f"no event {raw!r}")
    config = export_config(res.config)
    now = datetime.now(UTC)
    try:
        async with res.engine.connect() as conn:
            plan = await build_plan(conn, [event_id], config, res.names, now, {"event": raw})
        check_size(plan, config.max_bytes)
    except ExportTooLarge as exc:
        raise APIError(413, str(exc)) from None
    except ExportError:
        raise NotFound(f"no event {raw!r}") from None
    filename = f"hsi-event-{event_id}.zip"
    return StreamingResponse(
        archive_chunks(plan, config),
        media_type=ZIP,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


ENDPOINTS = (
    Endpoint(
        "/api/events/{event_id}/export",
        event_export,
        "The event as an evidence zip: its original files byte for byte (`files/`), the "
        "pictures with their boxes drawn, `event.json` (the event, the SHA-256 recorded when "
        "each file arrived, the stream entry ids of every fact), `summary.txt`, and "
        "`SHA256SUMS` over every other file (`sha256sum -c` format). Written while it is sent.",
        "events",
        params=(path_param("event_id", "The event (batch) id, a UUID.", UUID),),
        responses={
            200: "The zip (Content-Disposition: attachment).",
            404: "No such event.",
            413: "The event's files add up to more than EXPORT_MAX_MB.",
        },
        content_types=(ZIP,),
    ),
)

"""The route handlers, one module per noun; each exports `ENDPOINTS`, and `ENDPOINTS` here is
all of them: the one table both the routes and the OpenAPI document are made from."""

from __future__ import annotations

from hsi.api.endpoint import Endpoint
from hsi.api.routes import (
    alerts,
    cameras,
    detections,
    events,
    exports,
    live,
    media,
    pipeline,
    reanalyses,
    streams,
    system,
)

ENDPOINTS: tuple[Endpoint, ...] = (
    *system.ENDPOINTS,
    *cameras.ENDPOINTS,
    *events.ENDPOINTS,
    *exports.ENDPOINTS,
    *alerts.ENDPOINTS,
    *reanalyses.ENDPOINTS,
    *detections.ENDPOINTS,
    *media.ENDPOINTS,
    *streams.ENDPOINTS,
    *pipeline.ENDPOINTS,
    *live.ENDPOINTS,
)

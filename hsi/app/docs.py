"""The machine-readable descriptions of HSI, written to files by `hsi docs`: OpenAPI (the query
API, `hsi.api.openapi`) and AsyncAPI (the streams, `hsi.api.asyncapi`); the API serves the same
documents at `/openapi.json` and `/asyncapi.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hsi.api.asyncapi import asyncapi_document
from hsi.api.openapi import build_openapi
from hsi.api.routes import ENDPOINTS


def openapi_document(*, keys_enabled: bool = False, rate_limited: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the query API."""
    return build_openapi(ENDPOINTS, keys_enabled=keys_enabled, rate_limited=rate_limited)


def write_docs(
    folder: Path,
    *,
    prefix: str = "hsi",
    keys_enabled: bool = False,
    rate_limited: bool = True,
) -> list[Path]:
    """Write `openapi.json` and `asyncapi.json` into `folder` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    documents: Mapping[str, dict[str, Any]] = {
        "openapi.json": openapi_document(keys_enabled=keys_enabled, rate_limited=rate_limited),
        "asyncapi.json": asyncapi_document(prefix),
    }
    written = []
    for name, document in documents.items():
        path = folder / name
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written

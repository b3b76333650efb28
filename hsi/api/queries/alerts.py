"""Alerts as projected from the cameras' alerts streams: the keyset-paged listing, newest first
by (recorded_at DESC, id DESC), and the alert state of one event (latest outcome per channel).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsi.api import links
from hsi.api.cursor import Cursor
from hsi.api.queries.paging import Page, in_window, uuid_keyset_page
from hsi.api.responses import iso, stored_error
from projections.tables import alerts
from streams.alerts.kinds import CHANNELS as CHANNELS

CURSOR_KIND = "alerts"
STATUSES: tuple[str, ...] = ("sent", "failed", "skipped")


@dataclass(frozen=True)
class AlertFilters:
    camera_id: str | None = None
    channels: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    event_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.camera_id is not None:
            out.append(alerts.c.camera_id == self.camera_id)
        if self.channels:
            out.append(alerts.c.channel.in_(self.channels))
        if self.statuses:
            out.append(alerts.c.status.in_(self.statuses))
        if self.event_id is not None:
            out.append(alerts.c.event_id == self.event_id)
        out.extend(in_window(alerts.c.recorded_at, self.since, self.until))
        return out


def alert_item(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "camera_id": row.camera_id,
        "event_id": str(row.event_id),
        "rule": row.rule,
        "channel": row.channel,
        "status": row.status,
        "reason": row.reason,
        "attempt": row.attempt,
        "error": stored_error(row.error),
        "idempotency_key": row.idempotency_key,
        "delivered_at": iso(row.delivered_at),
        "recorded_at": iso(row.recorded_at),
        "entry_id": row.entry_id,
        "links": {
            "event": links.event_url(row.event_id),
            "camera": links.camera_url(row.camera_id),
        },
    }


async def list_alerts(
    conn: AsyncConnection, filters: AlertFilters, limit: int, after: Cursor | None
) -> Page:
    conditions = filters.conditions()
    return await uuid_keyset_page(
        conn, alerts, "recorded_at", CURSOR_KIND, conditions, limit, after, alert_item
    )


async def event_alerts(conn: AsyncConnection, event_id: uuid.UUID) -> list[dict[str, Any]]:
    """The latest outcome of the event's alert on each channel (channel order)."""
    query = (
        select(alerts)
        .where(alerts.c.event_id == event_id)
        .order_by(alerts.c.channel, alerts.c.recorded_at.desc(), alerts.c.id.desc())
    )
    latest: dict[str, Row[Any]] = {}
    for row in (await conn.execute(query)).all():
        latest.setdefault(row.channel, row)
    return [
        {
            "channel": row.channel,
            "status": row.status,
            "reason": row.reason,
            "rule": row.rule,
            "attempt": row.attempt,
            "error": stored_error(row.error),
            "delivered_at": iso(row.delivered_at),
            "recorded_at": iso(row.recorded_at),
        }
        for row in latest.values()
    ]

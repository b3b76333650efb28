"""What an alert says: one event, built from its analysis and batch, the same on every channel.

The links point at the query API under `public_base_url`: the event (`/api/events/{id}`, the
batch id) and the thumbnail of the event's first detected object
(`/api/detections/{id}/thumbnail`), whose id the read side derives with `streams.ids.detection_id`
(uuid5 of camera, detection entry id and object index).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from streams.ids import detection_id
from streams.names import camera_name_of
from streams.schemas import AnalysisCompleted, BatchClosed, Box

PAYLOAD_TYPE: Final = "hsi.alert"
PAYLOAD_VERSION: Final = 1


def idempotency_key(camera: str, event_id: str, channel: str) -> str:
    """The key of one event's alert on one channel, given to the channel as well (webhook
    header `Idempotency-Key`, MQTT payload, e-mail `Message-ID`), so receivers can drop a
    repeat of an ambiguous attempt (a timeout after the receiver had the alert)."""
    return f"{camera}:{event_id}:{channel}"


@dataclass(frozen=True)
class Snapshot:
    """The picture of the event's first detection with objects, and the boxes found in it."""

    path: str  # relative to the camera root
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class Alert:
    """One event as every channel tells it."""

    event_id: str
    camera_id: str
    camera_name: str  # what people call the camera: its folder's name, else its id
    rule: str
    risk_level: str
    risk_score: int
    summary: str
    reasoning: str
    object_types: tuple[str, ...]
    time: datetime  # when the event happened (its window start, else its analysis)
    analyzed_at: datetime
    event_url: str
    thumbnail_url: str | None
    snapshot: Snapshot | None
    late_seconds: float | None = None  # the pictures reached HSI this late (`late_by`)

    def payload(self, key: str) -> dict[str, Any]:
        """The JSON body of the webhook and the MQTT event message."""
        return {
            "type": PAYLOAD_TYPE,
            "version": PAYLOAD_VERSION,
            "idempotency_key": key,
            "event_id": self.event_id,
            "camera_id": self.camera_id,
            "rule": self.rule,
            "risk_level": self.risk_level,
            "risk_score": self.risk_score,
            "summary": self.summary,
            "object_types": list(self.object_types),
            "camera_name": self.camera_name,
            "time": _iso(self.time),
            "local_time": self.local_time,
            "analyzed_at": _iso(self.analyzed_at),
            "late_seconds": self.late_seconds,
            "links": {"event": self.event_url, "thumbnail": self.thumbnail_url},
        }

    @property
    def subject(self) -> str:
        late = " (late)" if self.late_seconds is not None else ""
        return (
            f"[HSI]{late} {self.risk_level.upper()} risk ({self.risk_score}) at {self.camera_name}"
        )

    @property
    def local_time(self) -> str:
        """When it happened, for people: local time in the rules' zone, with the zone's name."""
        return f"{self.time:%Y-%m-%d %H:%M} {self.time.tzname()}"

    @property
    def late_note(self) -> str | None:
        """For people: that this is not happening now, and how late it is."""
        if self.late_seconds is None:
            return None
        return (
            f"Late: the pictures reached HSI {_duration(self.late_seconds)} after they were taken "
            "(a delayed upload or a backfill); this is not happening now."
        )


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{max(1, minutes)} min"
    hours = seconds / 3600
    if hours < 48:
        return f"{hours:.0f} h"
    return f"{hours / 24:.0f} days"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_alert(
    analysis: AnalysisCompleted,
    batch: BatchClosed | None,
    rule: str,
    base_url: str,
    when: datetime,
    late_seconds: float | None = None,
) -> Alert:
    """The alert of an analysis (and its batch, when still on its stream) under `rule`;
    `late_seconds`: how late the event reached HSI, if it is late."""
    base = base_url.rstrip("/")
    camera = analysis.camera_id
    snapshot = None
    thumbnail = None
    if batch is not None:
        first = next((d for d in batch.detections if d.objects), None)
        if first is not None:
            snapshot = Snapshot(first.path, tuple(o.bbox for o in first.objects))
            thumbnail = f"{base}/api/detections/{detection_id(camera, first.entry_id, 0)}/thumbnail"
    folder = None if batch is None else camera_name_of(d.path for d in batch.detections)
    return Alert(
        event_id=analysis.batch_id,
        camera_id=camera,
        camera_name=folder or camera,
        rule=rule,
        risk_level=analysis.risk_level,
        risk_score=analysis.risk_score,
        summary=analysis.summary,
        reasoning=analysis.reasoning,
        object_types=() if batch is None else tuple(batch.object_types),
        time=when,
        analyzed_at=analysis.analyzed_at,
        event_url=f"{base}/api/events/{analysis.batch_id}",
        thumbnail_url=thumbnail,
        snapshot=snapshot,
        late_seconds=late_seconds,
    )

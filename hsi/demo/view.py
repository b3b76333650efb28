"""What the demo shows: the uploads of the scene, what was found in them, and the events.

`DemoView` keeps the state, built from what the API answers (`Snapshot`), and renders it with rich
as two tables. `Screen` puts it on the terminal: a table that updates in place on an interactive
terminal, one line per change otherwise (pipes, CI, tests).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hsi.demo.scene import SCENE, Shot
from streams.names import camera_id

RISK_STYLES = {"low": "green", "medium": "yellow", "high": "red", "critical": "bold red"}


@dataclass(frozen=True)
class Snapshot:
    """One look at the API: /api/streams, then /api/detections, then /api/events."""

    streams: dict[str, Any]
    detections: list[dict[str, Any]]
    events: list[dict[str, Any]]

    def projected_detections(self) -> Counter[str]:
        """Per camera: detection entries the projector has applied (length − lag − pending)."""
        done: Counter[str] = Counter()
        for camera in self.streams.get("cameras", []):
            for stream in camera.get("streams", []):
                if stream.get("kind") != "detections":
                    continue
                behind = sum(
                    int(g.get("lag") or 0) + int(g.get("pending") or 0)
                    for g in stream.get("groups", [])
                    if g.get("name") == "project"
                )
                done[camera["camera_id"]] = int(stream.get("length") or 0) - behind
        return done

    def idle(self) -> bool:
        totals = self.streams.get("totals", {})
        return not totals.get("lag") and not totals.get("pending")


@dataclass
class ShotRow:
    shot: Shot
    file: str = ""
    status: str = "waiting"  # waiting, uploading, uploaded, found, nothing
    found: str = ""

    @property
    def camera_id(self) -> str:
        return camera_id(self.shot.camera)

    @property
    def path(self) -> str:
        return f"{self.shot.camera}/{self.file}"


def _local_time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%H:%M:%S")


def describe_event(event: dict[str, Any]) -> str:
    objects = ", ".join(event.get("object_types") or []) or "-"
    return f"{objects} ({event.get('detection_count') or 0})"


def describe_risk(event: dict[str, Any]) -> str:
    status = event.get("analysis_status")
    if status != "completed":
        return str(status)
    return f"{event.get('risk_score')} {event.get('risk_level')}"


@dataclass
class DemoView:
    speed: float = 1.0
    rows: list[ShotRow] = field(default_factory=lambda: [ShotRow(shot) for shot in SCENE])
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    message: str = ""
    folders: dict[str, str] = field(
        default_factory=lambda: {camera_id(s.camera): s.camera for s in SCENE}
    )

    def folder(self, camera: str) -> str:
        return self.folders.get(camera, camera)

    def uploads(self) -> Counter[str]:
        """Per camera id: files written so far."""
        return Counter(r.camera_id for r in self.rows if r.status not in ("waiting", "uploading"))

    def apply(self, snapshot: Snapshot) -> list[str]:
        """Take in a snapshot; return one line per change (for the line-by-line screen)."""
        lines: list[str] = []
        by_path: dict[str, list[str]] = {}
        for item in snapshot.detections:
            by_path.setdefault(item["path"], []).append(f"{item['label']} {item['confidence']:.2f}")
        projected, uploads = snapshot.projected_detections(), self.uploads()
        for row in self.rows:
            if row.status != "uploaded":
                continue
            if row.path in by_path:
                row.status, row.found = "found", ", ".join(sorted(by_path[row.path]))
            elif projected[row.camera_id] >= uploads[row.camera_id]:
                row.status, row.found = "nothing", "nothing of interest"
            else:
                continue
            lines.append(f"detect  {row.shot.camera:<11} {row.file:<28} {row.found}")
        for event in snapshot.events:
            known = self.events.get(event["id"])
            self.events[event["id"]] = event
            done = event.get("analysis_status") != "pending"
            if done and (known is None or known.get("analysis_status") == "pending"):
                lines.append(
                    f"event   {self.folder(event['camera_id']):<11} {describe_event(event):<18} "
                    f"risk {describe_risk(event):<12} {event.get('summary') or ''}".rstrip()
                )
        return lines

    def settled(self, snapshot: Snapshot) -> bool:
        """Every upload detected and projected, every object in an event, every event analyzed."""
        if any(r.status in ("waiting", "uploading", "uploaded") for r in self.rows):
            return False
        if not snapshot.idle():
            return False
        objects: Counter[str] = Counter(d["camera_id"] for d in snapshot.detections)
        in_events: Counter[str] = Counter()
        for event in snapshot.events:
            if event.get("analysis_status") == "pending":
                return False
            in_events[event["camera_id"]] += int(event.get("detection_count") or 0)
        return objects == in_events

    def ordered_events(self) -> list[dict[str, Any]]:
        return sorted(self.events.values(), key=lambda e: (e.get("window_start") or "", e["id"]))

    # --- rendering --------------------------------------------------------------------------

    def uploads_table(self) -> Table:
        table = Table(title="Camera uploads", title_justify="left", expand=False)
        for column in ("at", "camera", "what happens", "file", "detected"):
            table.add_column(column, no_wrap=column in ("at", "camera", "file"))
        for row in self.rows:
            shown = {
                "waiting": Text("…", style="dim"),
                "uploading": Text("uploading", style="cyan"),
                "uploaded": Text("detecting", style="cyan"),
            }.get(row.status, Text(row.found, style="dim" if row.status == "nothing" else ""))
            table.add_row(
                f"+{row.shot.at / self.speed:04.1f}s",
                row.shot.camera,
                row.shot.caption,
                row.file or "",
                shown,
            )
        return table

    def events_table(self) -> Table:
        table = Table(title="Security events", title_justify="left", expand=False)
        for column in ("time", "camera", "objects", "risk", "summary"):
            table.add_column(column, no_wrap=column != "summary")
        for event in self.ordered_events():
            level = str(event.get("risk_level") or "")
            table.add_row(
                _local_time(event.get("window_start")),
                self.folder(event["camera_id"]),
                describe_event(event),
                Text(describe_risk(event), style=RISK_STYLES.get(level, "dim")),
                event.get("summary") or "",
            )
        if not self.events:
            table.add_row("", Text("none yet", style="dim"), "", "", "")
        return table

    def render(self) -> RenderableType:
        return Group(self.uploads_table(), self.events_table(), Text(self.message, style="dim"))


class Screen:
    """The view on the terminal: live tables on a TTY, else one printed line per change."""

    def __init__(self, console: Console, view: DemoView) -> None:
        self.console = console
        self.view = view
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(view.render(), console=console, refresh_per_second=4)

    def __enter__(self) -> Screen:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self.view.render(), refresh=True)
            self._live.stop()

    def show(self, lines: list[str]) -> None:
        """Refresh the live tables, or print `lines`."""
        if self._live is not None:
            self._live.update(self.view.render())
            return
        for line in lines:
            self.console.print(line, markup=False, highlight=False)

    def status(self, message: str) -> None:
        self.view.message = message
        self.show([message])
